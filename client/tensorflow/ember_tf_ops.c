/*
 * ember_tf_ops.c — TensorFlow ops that pull and push ember rows, written against
 * TensorFlow's C API for ops and kernels (tensorflow/c/ops.h, kernels.h), linking
 * libember. Built as a shared object (libember_tf_ops.so) that Python loads with
 * tf.load_op_library; ember.tensorflow wraps the ops (gradients, Keras layers).
 *
 *   EmberPull(keys: T) -> rows: float32        keys.shape + [dim]
 *   EmberPush(keys: T, grads: float32)          grads: keys.shape + [dim]
 *   EmberPullPooled(keys: T, offsets: int64, weights: float32) -> vecs: [bags, dim]
 *   EmberPushPooled(keys: T, offsets: int64, weights: float32, grads: float32)
 *
 * T is int64 or uint64 (int64 keys are ember's uint64 keys bit for bit). Attrs:
 * table (string), dim (int), serve (bool, pulls: find without inserting),
 * combiner ("sum", "mean", "sqrtn": pooled ops), shards (string: "" reads the
 * environment as ember_client_open does: EMBER_SHARDS, TF_CONFIG's cluster.ps,
 * EMBER_SHARD_PATTERN), timeout_ms (int, 0: libember's 10 s). Pooled ops take the
 * bags as CSR offsets (bags + 1 entries, 0 .. n) and per-key weights (n floats,
 * or an empty tensor for none), as ember_pull_pooled / ember_push_pooled.
 *
 * Buffers: the keys, offsets, weights and gradients go to libember by the
 * address of the input tensors' buffers, and the pull writes straight into the
 * output tensor TensorFlow allocated: no copy on this side of libember.
 *
 * The client: one ember_client per distinct (shards, timeout_ms) for the whole
 * process, opened by the first kernel that needs it and shared by every op after
 * (libember's calls are thread-safe; TensorFlow runs kernels from many threads).
 * This registry is the library's one deliberate global: a process talks to one
 * set of shards, and a kernel is constructed per graph node, so a client per
 * kernel would open a connection per node. It lives until the process exits.
 *
 * Errors: a failed call fails the op with TensorFlow's code equal to the gRPC
 * code libember returned (TF_Code and gRPC's codes are the same numbers) and the
 * message "<CODE NAME>: <libember's message>"; bad shapes are refused before
 * anything is sent (INVALID_ARGUMENT), so nothing changed.
 */
#define _POSIX_C_SOURCE 200809L /* strdup */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ops.h names its handle types as C++ does (struct tags, no typedefs): give C
 * the typedefs it expects. */
typedef struct TF_DimensionHandle TF_DimensionHandle;
typedef struct TF_OpDefinitionBuilder TF_OpDefinitionBuilder;
typedef struct TF_ShapeHandle TF_ShapeHandle;
typedef struct TF_ShapeInferenceContext TF_ShapeInferenceContext;

#include <tensorflow/c/kernels.h>
#include <tensorflow/c/ops.h>
#include <tensorflow/c/tf_status.h>
#include <tensorflow/c/tf_tensor.h>

#include <ember/ember.h>

/* ---- the process's clients ------------------------------------------------- */

typedef struct tfops_conn {
    struct tfops_conn *next;
    char *shards;
    int64_t timeout_ms;
    ember_client *client;
} tfops_conn;

static pthread_mutex_t tfops_mu = PTHREAD_MUTEX_INITIALIZER;
static tfops_conn *tfops_conns; /* guarded by tfops_mu; never freed */

/* The client for (shards, timeout_ms), opened on first use. NULL with err filled
 * when ember_client_open refuses the options (no shards, a bad address). */
static ember_client *tfops_client(const char *shards, int64_t timeout_ms, ember_error *err)
{
    ember_client *c = NULL;
    pthread_mutex_lock(&tfops_mu);
    for (tfops_conn *p = tfops_conns; p; p = p->next) {
        if (p->timeout_ms == timeout_ms && strcmp(p->shards, shards) == 0) {
            c = p->client;
            break;
        }
    }
    if (!c) {
        ember_client_options o;
        ember_client_options_init(&o);
        o.shards = shards[0] ? shards : NULL;
        o.timeout_ms = (unsigned)timeout_ms;
        tfops_conn *p = calloc(1, sizeof *p);
        char *s = strdup(shards);
        if (!p || !s) {
            free(p);
            free(s);
            err->code = EMBER_RESOURCE_EXHAUSTED;
            snprintf(err->message, sizeof err->message, "out of memory");
        } else if ((c = ember_client_open(&o, err)) == NULL) {
            free(p);
            free(s);
        } else {
            p->shards = s;
            p->timeout_ms = timeout_ms;
            p->client = c;
            p->next = tfops_conns;
            tfops_conns = p;
        }
    }
    pthread_mutex_unlock(&tfops_mu);
    return c;
}

/* ---- kernels ----------------------------------------------------------------- */

#define TFOPS_MAX_RANK 32

typedef struct tfops_kernel {
    char table[96];
    uint32_t dim;
    int serve;
    ember_combiner combiner;
    ember_client *client;
} tfops_kernel;

static void tfops_fail(TF_OpKernelContext *ctx, int code, const char *fmt, const char *a,
                       const char *b)
{
    char msg[sizeof(((ember_error *)0)->message) + 160];
    snprintf(msg, sizeof msg, fmt, a, b);
    TF_Status *st = TF_NewStatus();
    TF_SetStatus(st, (TF_Code)code, msg);
    TF_OpKernelContext_Failure(ctx, st);
    TF_DeleteStatus(st);
}

static void tfops_fail_ember(TF_OpKernelContext *ctx, int rv, const ember_error *err)
{
    tfops_fail(ctx, rv, "%s: %s", ember_code_name(rv),
               err->message[0] ? err->message : ember_code_name(rv));
}

/* Reads a string attr into buf (cap bytes, NUL-terminated); 0 or -1 (failed). */
static int tfops_attr_string(TF_OpKernelConstruction *k, const char *name, char *buf,
                             size_t cap, TF_Status *st)
{
    int32_t list_size = 0, total = 0;
    TF_OpKernelConstruction_GetAttrSize(k, name, &list_size, &total, st);
    if (TF_GetCode(st) != TF_OK)
        return -1;
    if (total < 0 || (size_t)total >= cap) {
        TF_SetStatus(st, TF_INVALID_ARGUMENT, "ember op: a string attr is too long");
        return -1;
    }
    TF_OpKernelConstruction_GetAttrString(k, name, buf, (size_t)total, st);
    if (TF_GetCode(st) != TF_OK)
        return -1;
    buf[total] = '\0';
    return 0;
}

static void *tfops_create(TF_OpKernelConstruction *k)
{
    TF_Status *st = TF_NewStatus();
    tfops_kernel *kr = calloc(1, sizeof *kr);
    char shards[4096], comb[16] = "sum";
    int64_t dim = 0, timeout_ms = 0;
    TF_Bool serve = 0;
    if (!kr) {
        TF_SetStatus(st, TF_RESOURCE_EXHAUSTED, "ember op: out of memory");
        goto fail;
    }
    if (tfops_attr_string(k, "table", kr->table, sizeof kr->table, st) ||
        tfops_attr_string(k, "shards", shards, sizeof shards, st))
        goto fail;
    TF_OpKernelConstruction_GetAttrInt64(k, "dim", &dim, st);
    if (TF_GetCode(st) != TF_OK)
        goto fail;
    TF_OpKernelConstruction_GetAttrInt64(k, "timeout_ms", &timeout_ms, st);
    if (TF_GetCode(st) != TF_OK)
        goto fail;
    if (TF_OpKernelConstruction_HasAttr(k, "serve", st)) {
        TF_OpKernelConstruction_GetAttrBool(k, "serve", &serve, st);
        if (TF_GetCode(st) != TF_OK)
            goto fail;
    }
    if (TF_OpKernelConstruction_HasAttr(k, "combiner", st) &&
        tfops_attr_string(k, "combiner", comb, sizeof comb, st))
        goto fail;
    TF_SetStatus(st, TF_OK, "");
    if (dim <= 0 || dim > UINT32_MAX || timeout_ms < 0 || timeout_ms > UINT32_MAX) {
        TF_SetStatus(st, TF_INVALID_ARGUMENT,
                     "ember op: dim must be in 1..2^32-1 and timeout_ms in 0..2^32-1");
        goto fail;
    }
    kr->dim = (uint32_t)dim;
    kr->serve = serve != 0;
    if (strcmp(comb, "sum") == 0)
        kr->combiner = EMBER_COMBINER_SUM;
    else if (strcmp(comb, "mean") == 0)
        kr->combiner = EMBER_COMBINER_MEAN;
    else if (strcmp(comb, "sqrtn") == 0)
        kr->combiner = EMBER_COMBINER_SQRTN;
    else {
        TF_SetStatus(st, TF_INVALID_ARGUMENT,
                     "ember op: combiner must be \"sum\", \"mean\" or \"sqrtn\"");
        goto fail;
    }
    ember_error err = {0};
    kr->client = tfops_client(shards, timeout_ms, &err);
    if (!kr->client) {
        char msg[sizeof err.message + 64];
        snprintf(msg, sizeof msg, "%s: opening the ember client: %s",
                 ember_code_name(err.code), err.message);
        TF_SetStatus(st, (TF_Code)(err.code ? err.code : EMBER_INTERNAL), msg);
        goto fail;
    }
    TF_DeleteStatus(st);
    return kr;
fail:
    TF_OpKernelConstruction_Failure(k, st);
    TF_DeleteStatus(st);
    free(kr);
    return NULL;
}

static void tfops_delete(void *kernel)
{
    free(kernel);
}

/* Inputs 0..n-1 of the kernel into t[] (NULL on failure, op failed). */
static int tfops_inputs(TF_OpKernelContext *ctx, TF_Tensor **t, int n)
{
    TF_Status *st = TF_NewStatus();
    int i;
    for (i = 0; i < n; i++) {
        TF_GetInput(ctx, i, &t[i], st);
        if (TF_GetCode(st) != TF_OK) {
            TF_OpKernelContext_Failure(ctx, st);
            break;
        }
    }
    TF_DeleteStatus(st);
    if (i == n)
        return 0;
    while (i-- > 0)
        TF_DeleteTensor(t[i]);
    return -1;
}

static void tfops_free(TF_Tensor **t, int n)
{
    for (int i = 0; i < n; i++)
        TF_DeleteTensor(t[i]);
}

/* grads must be keys.shape + [dim] (rows: n*dim floats). */
static int tfops_check_rows(TF_OpKernelContext *ctx, const TF_Tensor *keys,
                            const TF_Tensor *g, uint32_t dim, const char *what)
{
    int nd = TF_NumDims(keys);
    int ok = TF_NumDims(g) == nd + 1 && TF_Dim(g, nd) == (int64_t)dim;
    for (int i = 0; ok && i < nd; i++)
        ok = TF_Dim(g, i) == TF_Dim(keys, i);
    if (!ok) {
        char d[24];
        snprintf(d, sizeof d, "%" PRIu32, dim);
        tfops_fail(ctx, TF_INVALID_ARGUMENT,
                   "INVALID_ARGUMENT: %s must be shaped keys.shape + [dim] (dim %s)", what, d);
    }
    return ok ? 0 : -1;
}

static void tfops_pull(void *kernel, TF_OpKernelContext *ctx)
{
    tfops_kernel *kr = kernel;
    TF_Tensor *in[1];
    if (tfops_inputs(ctx, in, 1))
        return;
    int nd = TF_NumDims(in[0]);
    int64_t dims[TFOPS_MAX_RANK + 1];
    if (nd > TFOPS_MAX_RANK) {
        tfops_fail(ctx, TF_INVALID_ARGUMENT, "%s: keys of rank over %s", "INVALID_ARGUMENT",
                   "32");
        tfops_free(in, 1);
        return;
    }
    for (int i = 0; i < nd; i++)
        dims[i] = TF_Dim(in[0], i);
    dims[nd] = kr->dim;
    size_t n = (size_t)TF_TensorElementCount(in[0]);
    TF_Status *st = TF_NewStatus();
    TF_Tensor *out = TF_AllocateOutput(ctx, 0, TF_FLOAT, dims, nd + 1,
                                       n * kr->dim * sizeof(float), st);
    if (TF_GetCode(st) != TF_OK) {
        TF_OpKernelContext_Failure(ctx, st);
    } else if (n > 0) {
        ember_error err = {0};
        int rv = ember_pull(kr->client, kr->table, TF_TensorData(in[0]), n,
                            TF_TensorData(out), kr->dim,
                            kr->serve ? EMBER_PULL_SERVE : EMBER_PULL_INSERT, &err);
        if (rv)
            tfops_fail_ember(ctx, rv, &err);
    }
    TF_DeleteStatus(st);
    TF_DeleteTensor(out);
    tfops_free(in, 1);
}

static void tfops_push(void *kernel, TF_OpKernelContext *ctx)
{
    tfops_kernel *kr = kernel;
    TF_Tensor *in[2];
    if (tfops_inputs(ctx, in, 2))
        return;
    size_t n = (size_t)TF_TensorElementCount(in[0]);
    if (tfops_check_rows(ctx, in[0], in[1], kr->dim, "grads") == 0 && n > 0) {
        ember_error err = {0};
        int rv = ember_push(kr->client, kr->table, TF_TensorData(in[0]), n,
                            TF_TensorData(in[1]), kr->dim, &err);
        if (rv)
            tfops_fail_ember(ctx, rv, &err);
    }
    tfops_free(in, 2);
}

/* Pooled ops' shared checks: keys (n), offsets (bags + 1) and weights (n or 0)
 * vectors. Sets *bags; -1 when the op failed. */
static int tfops_check_bags(TF_OpKernelContext *ctx, TF_Tensor **in, size_t *bags)
{
    if (TF_NumDims(in[0]) != 1 || TF_NumDims(in[1]) != 1 || TF_NumDims(in[2]) != 1 ||
        TF_Dim(in[1], 0) < 1 ||
        (TF_Dim(in[2], 0) != 0 && TF_Dim(in[2], 0) != TF_Dim(in[0], 0))) {
        tfops_fail(ctx, TF_INVALID_ARGUMENT, "%s: %s", "INVALID_ARGUMENT",
                   "pooled ops take keys [n], offsets [bags + 1] and weights [n] or [0]");
        return -1;
    }
    *bags = (size_t)TF_Dim(in[1], 0) - 1;
    return 0;
}

static void tfops_pull_pooled(void *kernel, TF_OpKernelContext *ctx)
{
    tfops_kernel *kr = kernel;
    TF_Tensor *in[3];
    size_t bags;
    if (tfops_inputs(ctx, in, 3))
        return;
    if (tfops_check_bags(ctx, in, &bags) == 0) {
        int64_t dims[2] = {(int64_t)bags, kr->dim};
        TF_Status *st = TF_NewStatus();
        TF_Tensor *out = TF_AllocateOutput(ctx, 0, TF_FLOAT, dims, 2,
                                           bags * kr->dim * sizeof(float), st);
        if (TF_GetCode(st) != TF_OK) {
            TF_OpKernelContext_Failure(ctx, st);
        } else {
            ember_error err = {0};
            const float *w = TF_Dim(in[2], 0) ? TF_TensorData(in[2]) : NULL;
            int rv = ember_pull_pooled(kr->client, kr->table, TF_TensorData(in[0]),
                                       (size_t)TF_Dim(in[0], 0), TF_TensorData(in[1]), bags,
                                       w, kr->combiner, TF_TensorData(out), kr->dim,
                                       kr->serve ? EMBER_PULL_SERVE : EMBER_PULL_INSERT,
                                       &err);
            if (rv)
                tfops_fail_ember(ctx, rv, &err);
        }
        TF_DeleteStatus(st);
        TF_DeleteTensor(out);
    }
    tfops_free(in, 3);
}

static void tfops_push_pooled(void *kernel, TF_OpKernelContext *ctx)
{
    tfops_kernel *kr = kernel;
    TF_Tensor *in[4];
    size_t bags;
    if (tfops_inputs(ctx, in, 4))
        return;
    if (tfops_check_bags(ctx, in, &bags) == 0) {
        if (TF_NumDims(in[3]) != 2 || TF_Dim(in[3], 0) != (int64_t)bags ||
            TF_Dim(in[3], 1) != (int64_t)kr->dim) {
            tfops_fail(ctx, TF_INVALID_ARGUMENT, "%s: %s", "INVALID_ARGUMENT",
                       "grads must be [bags, dim]");
        } else {
            ember_error err = {0};
            const float *w = TF_Dim(in[2], 0) ? TF_TensorData(in[2]) : NULL;
            int rv = ember_push_pooled(kr->client, kr->table, TF_TensorData(in[0]),
                                       (size_t)TF_Dim(in[0], 0), TF_TensorData(in[1]), bags,
                                       w, kr->combiner, TF_TensorData(in[3]), kr->dim, &err);
            if (rv)
                tfops_fail_ember(ctx, rv, &err);
        }
    }
    tfops_free(in, 4);
}

/* ---- registration -------------------------------------------------------------- */

static void tfops_unknown_shape(TF_ShapeInferenceContext *ctx, TF_Status *st)
{
    /* The C API cannot read an int attr here (dim): ember.tensorflow sets the
     * static shape after the op. */
    TF_ShapeInferenceContextSetUnknownShape(ctx, st);
}

static void tfops_no_outputs(TF_ShapeInferenceContext *ctx, TF_Status *st)
{
    (void)ctx;
    TF_SetStatus(st, TF_OK, "");
}

static void tfops_register(const char *op, const char *const *inputs, const char *output,
                           int pooled, int pull,
                           void (*compute)(void *, TF_OpKernelContext *))
{
    TF_Status *st = TF_NewStatus();
    TF_OpDefinitionBuilder *b = TF_NewOpDefinitionBuilder(op);
    TF_OpDefinitionBuilderAddAttr(b, "T: {int64, uint64}");
    TF_OpDefinitionBuilderAddAttr(b, "table: string");
    TF_OpDefinitionBuilderAddAttr(b, "dim: int >= 1");
    TF_OpDefinitionBuilderAddAttr(b, "shards: string = ''");
    TF_OpDefinitionBuilderAddAttr(b, "timeout_ms: int = 0");
    if (pull)
        TF_OpDefinitionBuilderAddAttr(b, "serve: bool = false");
    if (pooled)
        TF_OpDefinitionBuilderAddAttr(b, "combiner: {'sum', 'mean', 'sqrtn'} = 'sum'");
    for (const char *const *in = inputs; *in; in++)
        TF_OpDefinitionBuilderAddInput(b, *in);
    if (output)
        TF_OpDefinitionBuilderAddOutput(b, output);
    /* Pulls insert (training) and pushes write: never folded, merged or pruned. */
    TF_OpDefinitionBuilderSetIsStateful(b, 1);
    TF_OpDefinitionBuilderSetShapeInferenceFunction(b, output ? tfops_unknown_shape
                                                              : tfops_no_outputs);
    TF_RegisterOpDefinition(b, st);
    if (TF_GetCode(st) != TF_OK)
        fprintf(stderr, "ember_tf_ops: registering %s: %s\n", op, TF_Message(st));

    static const TF_DataType key_types[] = {TF_INT64, TF_UINT64};
    for (size_t i = 0; i < 2; i++) {
        TF_KernelBuilder *kb = TF_NewKernelBuilder(op, "CPU", tfops_create, compute,
                                                   tfops_delete);
        TF_KernelBuilder_TypeConstraint(kb, "T", key_types[i], st);
        if (TF_GetCode(st) == TF_OK)
            TF_RegisterKernelBuilder(op, kb, st);
        if (TF_GetCode(st) != TF_OK)
            fprintf(stderr, "ember_tf_ops: registering %s's kernel: %s\n", op, TF_Message(st));
    }
    TF_DeleteStatus(st);
}

__attribute__((constructor)) static void tfops_init(void)
{
    static const char *const pull_in[] = {"keys: T", NULL};
    static const char *const push_in[] = {"keys: T", "grads: float", NULL};
    static const char *const pull_pooled_in[] = {"keys: T", "offsets: int64", "weights: float",
                                                 NULL};
    static const char *const push_pooled_in[] = {"keys: T", "offsets: int64", "weights: float",
                                                 "grads: float", NULL};
    tfops_register("EmberPull", pull_in, "rows: float", 0, 1, tfops_pull);
    tfops_register("EmberPush", push_in, NULL, 0, 0, tfops_push);
    tfops_register("EmberPullPooled", pull_pooled_in, "vecs: float", 1, 1, tfops_pull_pooled);
    tfops_register("EmberPushPooled", push_pooled_in, NULL, 1, 0, tfops_push_pooled);
}
