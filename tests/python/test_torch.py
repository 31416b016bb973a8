"""ember.torch against two real shards: the gradients torch computes for the
looked-up rows reach the server (after one step with server-side SGD lr, each
row moved by exactly -lr x its torch gradient), for Embedding and EmbeddingBag
(sum with weights, mean, empty bags), while the dense part gets its gradients
as usual; eval() pulls without creating rows or pushing; prefetch is used.
Skipped (exit 77) where PyTorch is not installed."""

import numpy as np

from ember_test_util import ShardsTest, main, need_torch

need_torch()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import ember  # noqa: E402
import ember.torch as et  # noqa: E402

DIM = 6
LR = 0.1


class TorchModules(ShardsTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        torch.manual_seed(0)

    def table(self, name):
        return dict(capacity_per_shard=4096, optimizer="sgd", lr=LR,
                    initializer=("uniform", -0.5, 0.5), seed=3)

    def reference_grad(self, uniq_rows, f):
        """torch's own gradient of f(rows) w.r.t. a local copy of the rows."""
        W = torch.tensor(uniq_rows, requires_grad=True)
        f(W).backward()
        return W.grad.numpy()

    def test_embedding_gradients_reach_the_server(self):
        c = self.client
        emb = et.Embedding(c, "emb", DIM, create=self.table("emb"))
        dense = torch.nn.Linear(3 * DIM, 1)
        ids = torch.tensor([[5, 9, 5], [2**40, 9, 7], [5, 5, 5], [-5, 7, 2]])  # duplicates; -5 is 2^64-5
        uniq, inverse = np.unique(ids.numpy().view(np.uint64), return_inverse=True)
        target = torch.randn(4, 1)

        out = emb(ids)
        self.assertEqual(out.shape, (4, 3, DIM))
        self.assertEqual(out.dtype, torch.float32)
        before = c.pull("emb", uniq, insert=False)  # created by the forward pull
        self.assertEqual(c.describe_table("emb").size, len(uniq))

        def loss_of(rows):
            return F.mse_loss(dense(rows.reshape(4, 3 * DIM)), target) + (rows ** 3).sum()

        loss_of(out).backward()
        self.assertEqual(emb.pushes, 1)
        self.assertIsNotNone(dense.weight.grad)  # the dense part trains as usual
        self.assertEqual(list(emb.parameters()), [])  # the sparse part is the server's

        idx = torch.from_numpy(inverse.reshape(4, 3).astype(np.int64))
        g = self.reference_grad(before, lambda W: loss_of(F.embedding(idx, W)))
        after = c.pull("emb", uniq, insert=False)
        np.testing.assert_allclose(after, before - np.float32(LR) * g, rtol=1e-5, atol=1e-6)
        self.assertTrue(np.abs(after - before).max() > 1e-3)

    def bag_case(self, mode, ids, offsets=None, weights=None):
        c = self.client
        table = f"bag_{mode}_{0 if offsets is None else 1}"
        bag = et.EmbeddingBag(c, table, DIM, mode=mode, create=self.table(table))
        flat = ids.reshape(-1)
        uniq, inverse = np.unique(flat.numpy().view(np.uint64), return_inverse=True)
        before = c.pull(table, uniq)
        out = bag(ids, offsets, per_sample_weights=weights)
        scale = torch.arange(1.0, out.shape[0] * DIM + 1).reshape(out.shape)
        (out * scale).sum().backward()

        ref = torch.nn.EmbeddingBag(len(uniq), DIM, mode=mode)
        with torch.no_grad():
            ref.weight.copy_(torch.from_numpy(before))
        ref_ids = torch.from_numpy(inverse.astype(np.int64)).reshape(ids.shape)
        ref_out = ref(ref_ids, offsets, per_sample_weights=weights)
        np.testing.assert_allclose(out.detach().numpy(), ref_out.detach().numpy(),
                                   rtol=1e-6, atol=1e-6)
        (ref_out * scale).sum().backward()
        after = c.pull(table, uniq, insert=False)
        np.testing.assert_allclose(after, before - np.float32(LR) * ref.weight.grad.numpy(),
                                   rtol=1e-5, atol=1e-6)
        self.assertEqual(bag.pushes, 1)

    def test_bag_sum_with_offsets_weights_and_an_empty_bag(self):
        ids = torch.tensor([3, 4, 3, 8, 1, 1, 1])
        offsets = torch.tensor([0, 3, 3, 5])  # bag 1 is empty
        weights = torch.tensor([0.5, 2.0, 1.0, -1.0, 3.0, 1.0, 0.25])
        self.bag_case("sum", ids, offsets, weights)

    def test_bag_mean_2d(self):
        self.bag_case("mean", torch.tensor([[11, 12, 11], [13, 11, 14], [12, 12, 12]]))

    def test_bag_mean_with_offsets(self):
        self.bag_case("mean", torch.tensor([21, 22, 21, 23, 24]), torch.tensor([0, 1, 1, 4]))

    def test_eval_pulls_without_creating_or_pushing(self):
        c = self.client
        emb = et.Embedding(c, "ev", DIM, create=self.table("ev"))
        emb(torch.tensor([1, 2, 3]))
        size = c.describe_table("ev").size
        emb.eval()
        out = emb(torch.tensor([1, 2, 3, 100, 101]))
        self.assertFalse(out.requires_grad)
        self.assertEqual(c.describe_table("ev").size, size)  # 100, 101 not created
        emb.train()
        with torch.no_grad():
            emb(torch.tensor([1]))
        self.assertEqual(emb.pushes, 0)

    def test_prefetch_is_used_and_matches_a_pull(self):
        c = self.client
        emb = et.Embedding(c, "pf", DIM, create=self.table("pf"))
        a, b = torch.tensor([1, 2, 3, 2]), torch.tensor([[4, 5], [6, 4]])
        emb.prefetch(a)
        out_a = emb(a)
        self.assertEqual((emb.prefetch_hits, emb.pulls), (1, 0))
        emb.prefetch(b)
        out_a.sum().backward()  # this step's push, after b's rows were read
        out_b = emb(b)
        self.assertEqual((emb.prefetch_hits, emb.pulls), (2, 0))
        np.testing.assert_array_equal(out_b.detach().numpy(), c.pull("pf", b.numpy()))
        # A prefetch of other ids is dropped and the forward pulls.
        emb.prefetch(torch.tensor([7]))
        emb(torch.tensor([8]))
        self.assertEqual((emb.prefetch_hits, emb.pulls), (2, 1))

    def test_a_few_steps_learn(self):
        # Sparse rows on ember (SGD) + a dense layer (torch Adam) fit a target.
        c = self.client
        emb = et.Embedding(c, "fit", 4, create=dict(capacity_per_shard=1024, optimizer="adagrad",
                                                     lr=0.5, initializer=("normal", 0, 0.1)))
        head = torch.nn.Linear(4, 1)
        opt = torch.optim.Adam(head.parameters(), lr=0.05)
        ids = torch.arange(32)
        y = (ids % 2).float()
        losses = []
        for _ in range(60):
            loss = F.binary_cross_entropy_with_logits(head(emb(ids)).squeeze(1), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
        self.assertLess(losses[-1], 0.1 * losses[0])

    def test_bad_inputs(self):
        emb = et.Embedding(self.client, "emb_bad", DIM, create=self.table("emb_bad"))
        with self.assertRaises(ember.InvalidArgumentError):
            emb(torch.tensor([1.5]))
        with self.assertRaises(ember.InvalidArgumentError):
            et.EmbeddingBag(self.client, "emb_bad", DIM, mode="max")
        bag = et.EmbeddingBag(self.client, "emb_bad", DIM)
        with self.assertRaises(ember.InvalidArgumentError):
            bag(torch.tensor([1, 2]))  # 1-D without offsets


if __name__ == "__main__":
    main()
