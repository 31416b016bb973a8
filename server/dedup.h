/*
 * dedup.h — at-most-once pushes: which (client_id, sequence) pairs this shard
 * has already applied.
 *
 * A client (libember) gives every push a client id (random, ≠ 0) and a sequence
 * number, and retries a push with the same pair when it cannot know whether the
 * first try arrived. The server answers a pair it has seen with duplicate=true
 * and does not apply it again.
 *
 * Pushes from one client may arrive out of order (async pushes, retries), so per
 * client id we keep the highest sequence seen plus a window of the last
 * SRV_DEDUP_WINDOW sequences as a bitmap (a ring indexed by sequence mod the
 * window). A sequence:
 *   - above the highest: new; the window slides up (bits it passes are cleared);
 *   - within the window: new unless its bit is set;
 *   - below the window (more than SRV_DEDUP_WINDOW behind the highest): treated
 *     as a duplicate — at-most-once wins over at-least-once: we cannot tell, so
 *     we do not apply it (the caller counts it and logs at debug).
 * At most `max_clients` ids are remembered (default SRV_DEDUP_CLIENTS); beyond
 * that the least recently seen client is forgotten, and a retry from it after
 * that would be applied again. 65,536 clients × ~160 bytes ≈ 10 MiB.
 *
 * A pair is marked when the push is admitted (srv_dedup_begin), before it is
 * applied, and stays pending until srv_dedup_end (applied, or failed half-way:
 * the mark stays) or srv_dedup_abort (refused, nothing changed: unmarked, so a
 * corrected retry can go through). A retry that arrives while its original is
 * pending (queued in a coalesced batch, or running) waits in srv_dedup_begin
 * until the original ends, then is a duplicate, or new if it was aborted: a
 * "duplicate" reply therefore means the push is in the table, and a pull sent
 * after it sees it. A client whose push is pending is not forgotten.
 *
 * Thread-safety: all functions may be called from any thread (one mutex; each
 * call is a hash lookup and a few bit operations).
 */
#ifndef EMBER_SRV_DEDUP_H
#define EMBER_SRV_DEDUP_H

#include <stddef.h>
#include <stdint.h>

#define SRV_DEDUP_WINDOW 1024u
#define SRV_DEDUP_CLIENTS 65536u

typedef struct srv_dedup srv_dedup;

/* max_clients 0 = SRV_DEDUP_CLIENTS. NULL when out of memory. */
srv_dedup *srv_dedup_create(size_t max_clients);
void srv_dedup_destroy(srv_dedup *d);

/* 1: (client, seq) is new and is now marked and pending: the caller must end it
 * with srv_dedup_end or srv_dedup_abort. 0: already applied (a duplicate). Waits
 * while the pair is pending on another thread (see above). */
int srv_dedup_begin(srv_dedup *d, uint64_t client, uint64_t seq);
/* The push of a pair srv_dedup_begin returned 1 for has been applied (or failed
 * half-way): it stays marked, no longer pending. */
void srv_dedup_end(srv_dedup *d, uint64_t client, uint64_t seq);
/* Unmarks a pair that srv_dedup_begin marked but that was not applied. */
void srv_dedup_abort(srv_dedup *d, uint64_t client, uint64_t seq);
/* Clients currently remembered. */
size_t srv_dedup_clients(srv_dedup *d);

/* ---- the window saved with the tables (server/ckpt.c) ----------------------
 *
 * A save of every table takes one cut for all of them (storage/table.h) and,
 * at that cut, captures the window: a pair is in the saved window iff its push
 * is in the saved tables. Pairs that had ended by the cut are (their push was
 * applied before it); pairs pending then were marked at admission and may have
 * been applied before the cut or not yet: each is settled when it ends, by the
 * cut epoch of the write that applied it (ember_table_thread_cut_epoch: the
 * ending thread's last writing call, the push's own), and one aborted is left
 * out. A push applied in several writing calls (a coalesced batch in layers)
 * that straddle the cut is left out (a retry would apply its part again). */
typedef struct srv_dedup_capture srv_dedup_capture;

/* At the cut (no write of a saved table runs): records the window; `cut_epoch`
 * is the snapshots' (ember_table_snapshot_cut_epoch). NULL when out of memory
 * or when another capture is being settled. */
srv_dedup_capture *srv_dedup_capture_begin(srv_dedup *d, uint64_t cut_epoch);
/* After the tables are saved: waits up to timeout_ms for the pairs pending at
 * the cut to end (one still pending then is left out: *left_out counts them),
 * and returns the window in a malloc'ed *out[*len] for srv_dedup_restore. Frees
 * the capture. -1 when out of memory. */
int srv_dedup_capture_finish(srv_dedup *d, srv_dedup_capture *c, unsigned timeout_ms,
                             uint8_t **out, size_t *len, size_t *left_out);
/* Frees a capture not finished (the save failed). NULL is a no-op. */
void srv_dedup_capture_abort(srv_dedup *d, srv_dedup_capture *c);
/* Marks every pair of a saved window applied (merged with what d holds: the
 * restore at start and Load). *clients = clients read. -1: malformed. */
int srv_dedup_restore(srv_dedup *d, const uint8_t *p, size_t len, size_t *clients);

#endif
