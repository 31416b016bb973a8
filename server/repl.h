/*
 * repl.h — replication: a leader's followers and replicated acknowledgements
 * (repl.c), and a follower's tail of its leader (follow.c). README "Replication
 * and failover" states what each mode guarantees.
 *
 * The protocol is Admin/Export: a follower (ember-server --replica-of ADDR)
 * creates each of the leader's tables on its own backend, then asks, table by
 * table and again and again, for the rows written after the version it holds
 * (ExportRequest.after_version, follower_id set). Every such request is also
 * its acknowledgement, as a Kafka fetch offset is: the follower holds every row
 * written at or below after_version. The leader answers with the rows and the
 * table's stable version (storage/table.h: no write at or below it is still in
 * progress), which the follower asks after next. Removed rows (erase, eviction,
 * TTL, clear) carry no version: the follower compares the table's size and,
 * when they differ, reconciles its key set against a keys-only export.
 *
 * Acknowledgement (ember.proto AckMode): a push that is to be replicated is
 * refused UNAVAILABLE before anything is applied when fewer followers than it
 * waits for are attached (a progress request in the last
 * SRV_REPL_ATTACHED_MS); otherwise it is applied, and its reply is parked
 * (srv_repl_park, from the transport's finish) until enough followers
 * acknowledged a version at or above the table's version after the push, or it
 * fails DEADLINE_EXCEEDED at the call's deadline (UNAVAILABLE after
 * SRV_REPL_WAIT_MAX_MS without one, or at shutdown): never an OK that was not
 * replicated.
 *
 * Thread-safety: every function may be called from any thread.
 */
#ifndef EMBER_SRV_REPL_H
#define EMBER_SRV_REPL_H

#include <stddef.h>
#include <stdint.h>

#include "server/rpc.h"
#include "server/server.h"
#include "storage/status.h"

#define SRV_REPL_MAX_FOLLOWERS 32
#define SRV_REPL_ATTACHED_MS 3000     /* a follower counts as attached this long */
#define SRV_REPL_WAIT_MAX_MS 30000    /* a replicated push without a deadline */
#define SRV_REPL_FORGET_MS 60000      /* a follower silent this long is forgotten */

/* ---- leader (repl.c) ----------------------------------------------------- */

/* Starts / stops the thread that answers parked replicated pushes. Stop after
 * the transport stopped: what is still parked is answered UNAVAILABLE. */
int srv_repl_start(char *msg, size_t cap);
void srv_repl_stop(void);

/* A follower's progress request: it holds table `table` up to `version`. */
void srv_repl_progress(const char *follower_id, const char *addr, const char *table,
                       uint64_t version);

/* How many followers a push on `t` with the request's ack/ack_replicas
 * (EMBER_WIRE_ACK_*) must wait for: *need = 0 for an async push. INVALID_ARGUMENT
 * for an unknown ack mode; UNAVAILABLE when fewer followers are attached than
 * it needs (nothing is applied then). */
int srv_repl_need(const srv_table *t, int32_t ack, uint32_t replicas, uint32_t *need,
                  ember_error *err);

/* At-most-once across a failover: the (client, sequence) pairs this leader
 * applied, in a ring of SRV_REPL_DEDUP_LOG, each with its position. Recorded
 * once a push or erase is applied (kept); a follower's delta carries the pairs
 * after the position it asks from, and a replicated push waits for its
 * followers to hold its pair too. */
#define SRV_REPL_DEDUP_LOG 65536u
void srv_repl_dedup_record(uint64_t client, uint64_t seq);
/* The pairs after position `after`, up to `cap`, into clients[]/seqs[]; *n their
 * number, *next the position after them, *lost the pairs already gone. */
void srv_repl_dedup_since(uint64_t after, uint64_t *clients, uint64_t *seqs, size_t cap,
                          size_t *n, uint64_t *next, uint64_t *lost);
/* A follower's progress in that log (with its progress request). */
void srv_repl_dedup_progress(const char *follower_id, uint64_t next);

/* Arms call `c`: its OK answer waits for `need` followers on table `table`. */
void srv_repl_arm(srv_call *c, const char *table, uint32_t need);

/* From the transport's finish of an armed call with an OK answer: parks it
 * (the reply's slices pass to the park) and returns 1; 0 when it was not armed. */
int srv_repl_park(srv_call *c, srv_reply *resp);

/* A follower's long poll (ExportRequest.wait_ms): holds Export call `c` on
 * table `t` (the call's stream state keeps its reference) until a write on any
 * table of this server,
 * `wait_ms` passing, its deadline or shutdown; then `resume(c)` runs on the
 * replication thread and goes on with the export. */
void srv_repl_hold_export(srv_call *c, srv_table *t, uint32_t wait_ms,
                          void (*resume)(srv_call *c));

typedef struct srv_repl_follower {
    char id[64];
    char addr[256];
    uint64_t lag_versions; /* summed over the tables it follows */
    uint64_t last_seen_ms;
} srv_repl_follower;

/* The followers seen in the last SRV_REPL_FORGET_MS, up to `cap`; returns how
 * many were written. */
size_t srv_repl_followers(srv_repl_follower *out, size_t cap);
/* Replicated pushes waiting now, and those answered OK / failed since start. */
void srv_repl_counts(uint64_t *parked, uint64_t *acked, uint64_t *failed);

/* ---- follower (follow.c) ------------------------------------------------- */

/* Roles: a leader takes writes; a follower copies its leader; a fenced
 * server was a leader and learned of a newer term (a push carrying it): it
 * refuses writes until told to follow (Follow). */
enum { SRV_REPL_LEADER = 0, SRV_REPL_FOLLOWER = 1, SRV_REPL_FENCED = 2 };

/* Reads the term kept in --checkpoint-dir (file "term"), and starts the
 * replication thread: the tail of the leader while this server follows one
 * (cfg.replica_of at start, or Follow), and a new leader's Follow calls to the
 * one it replaced. */
int srv_follow_start(char *msg, size_t cap);
void srv_follow_stop(void);
/* SRV_REPL_*. */
int srv_follow_role_id(void);
/* 1 on a follower (its tables change only from its leader). */
int srv_follow_active(void);
/* "leader", "follower" or "fenced"; static. */
const char *srv_follow_role(void);
/* The leader term this server is at. */
uint64_t srv_follow_term(void);
/* The leader followed, into buf ("" on a leader). */
void srv_follow_leader(char *buf, size_t cap);
/* 0 on a leader; else FAILED_PRECONDITION "not the leader: ..." naming `what`. */
int srv_follow_refuse(const char *what, ember_error *err);
/* A push carried `term`: above this server's, a leader fences itself (and
 * every server adopts it); returns srv_follow_refuse's answer then, else 0. */
int srv_follow_check_term(uint64_t term, const char *what, ember_error *err);
/* Admin/Promote and Admin/Follow (ember.proto): statuses as it says. */
int srv_follow_promote(int force, uint64_t max_lag_versions, const char *advertise,
                       uint64_t *term, uint64_t *lag, char *previous, size_t cap,
                       ember_error *err);
int srv_follow_follow(const char *leader, uint64_t term, uint64_t *now_term,
                      ember_error *err);
/* A follower's lag: versions behind (summed over tables, from what the leader
 * last said) and the age of its newest complete copy, ms (0 on a leader). */
void srv_follow_lag(uint64_t *versions, uint64_t *ms);

#endif
