/*
 * ckpt.h — this shard's checkpoints: the layout of a checkpoint directory, the
 * restore at start, and the saves (Admin/Save, every --checkpoint-interval, and
 * at SIGTERM). storage/checkpoint.h has the file format.
 *
 * Layout of a directory saved into:
 *
 *   <dir>/<table>.ckpt                  the newest complete checkpoint of <table>:
 *                                       what the restore and Admin/Load read
 *   <dir>/<table>.ckpt.tmp.<pid>.<n>    a save in progress; never read. One left by
 *                                       a crash is removed when a server starts on
 *                                       the dir.
 *   <dir>/history/<table>.<UTC>.ckpt    older checkpoints, <UTC> the moment their
 *                                       save started (YYYYMMDDTHHMMSS.nnnnnnnnnZ,
 *                                       so names sort by time); a save keeps the
 *                                       newest --checkpoint-keep − 1 of its table
 *   <dir>/dedup.window                  the at-most-once window saved by the last
 *                                       save of every table, with the names and
 *                                       cuts of the tables it goes with
 *   <dir>/sets/<set>/                   a save set (Admin/Save with a set name):
 *                                       every table and dedup.window at one cut,
 *                                       never written over, not restored at start
 *   <dir>/.lock                         --checkpoint-dir only: flock'ed by the
 *                                       server using the dir, holds its pid
 *
 * A save of one table links the current <table>.ckpt into history/, writes the
 * temp file, fsyncs it, renames it over <table>.ckpt, fsyncs the directory and
 * prunes history/. <table>.ckpt is a complete checkpoint at every moment: the
 * previous one until the rename, the new one after it; a kill at any moment
 * leaves one of the two and perhaps a temp file, which nothing reads.
 *
 * Each file is its table at one moment, its cut (storage/table.h's snapshots),
 * while Pull and Push go on during the save. A save of every table takes one cut
 * for all of them (ember_table_snapshot_begin_many) and, at that cut, captures
 * the at-most-once window (dedup.h), written as dedup.window once every table is
 * saved; the files are still written one after another, each on its own: a crash
 * in the middle leaves the tables saved so far at the new checkpoint and the
 * others at their previous one, and a window that matches neither set (so it is
 * not restored).
 *
 * Dropping a table moves its <table>.ckpt into history/ (--checkpoint-dir only):
 * a dropped table is not restored at the next start, while Admin/Load of it by
 * name still finds it there.
 *
 * Restore (at start, before the port opens): every <dir>/<table>.ckpt. All
 * headers are checked first (this server's shard index and count, the table name
 * of the file's name), then each file is verified whole and loaded into a table
 * created from its config; then dedup.window, if it was saved with exactly these
 * tables at these cuts (srv_ckpt_window_apply). Any failure stops the start, naming the file: a server
 * never serves a table missing or partial because its checkpoint was bad.
 *
 * Threads: all saves other than the exit save run on one checkpointer thread, so
 * a save never holds a gRPC worker (a queued save reports its end through a
 * callback on that thread: Admin/Save answers its call there). A drop waits for a
 * table save in progress to end.
 *
 * Persistence only: no protobuf and no gRPC here; the caller shapes the reply.
 */
#ifndef EMBER_SRV_CKPT_H
#define EMBER_SRV_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "storage/checkpoint.h"
#include "storage/status.h"

/* Before srv_rpc_start: with --checkpoint-dir, creates the dir, locks it, removes
 * temp files left by a crash and, with --checkpoint-restore, restores every table
 * found, logging each (event=restored) and the total (event=restore_done).
 * Returns 0, or -1 with the reason in msg (the dir cannot be created or is
 * locked by another server; a checkpoint is damaged, of another shard or cannot
 * be loaded). */
int srv_ckpt_open(char *msg, size_t cap);

/* Before srv_rpc_start (a Save call may come at once): starts the checkpointer thread (queued Admin/Save calls,
 * and the periodic saves). Returns 0, or -1 with the reason in msg. */
int srv_ckpt_start(char *msg, size_t cap);

/* After srv_rpc_stop (no call is left to answer): lets a save in progress end,
 * then joins the checkpointer thread. */
void srv_ckpt_stop(void);

/* The save at SIGTERM (--checkpoint-on-exit, with a --checkpoint-dir): every
 * table, logged as event=shutdown_checkpoint with what was saved and how long it
 * took. With --checkpoint-exit-timeout-ms, a save still running then is given up:
 * the process exits 1 at once (the previous checkpoints are intact). Returns 0
 * (saved, or nothing to do) or -1 (a table could not be saved: logged). */
int srv_ckpt_exit_save(void);

/* What a queued save did: the files written (one per table saved) and their rows,
 * the directory saved into, each table's name and cut (its file's version), and
 * whether the at-most-once window was saved beside them. */
typedef struct srv_ckpt_saved {
    char **files;
    size_t n;
    uint64_t rows;
    const char *dir;
    char **tables;
    const uint64_t *cuts;
    int window;
} srv_ckpt_saved;

/* A queued save's end, on the checkpointer thread: `rc` 0 with what was saved in
 * *saved (valid during the call only), else the error in *err. */
typedef void (*srv_ckpt_done_fn)(void *arg, int rc, const ember_error *err,
                                 const srv_ckpt_saved *saved);

/* Admin/Save: queues the save of `table` ("" = every table) into `dir` ("" = the
 * --checkpoint-dir), or with a `set` name (NULL or "": none) into the fresh
 * directory <dir>/sets/<set> (ALREADY_EXISTS through done if a save made it
 * already); `done(arg, ...)` runs on the checkpointer thread when it ends. The
 * caller has checked the names. Returns 0 (queued: done will run), or
 * RESOURCE_EXHAUSTED in err (not queued: done will not run). */
#define SRV_CKPT_SET_NAME_MAX 64u
int srv_ckpt_queue_save(const char *table, const char *dir, const char *set,
                        srv_ckpt_done_fn done, void *arg, ember_error *err);

/* After the tables `names` were loaded from `dir` with cuts `cuts` (their
 * files' versions), n of them — the restore at start, or Load of every table
 * of a dir: restores the at-most-once window saved beside them (dedup.h) if it
 * was saved with exactly those tables at those cuts; else logs why not. */
void srv_ckpt_window_apply(const char *dir, char *const *names, const uint64_t *cuts, size_t n,
                           const char *op);

/* Keeps table t's acknowledgement setting (ack, ack_replicas: a server setting
 * the checkpoint file does not hold) in <--checkpoint-dir>/<name>.ack, so the
 * restore at start gives a restored table the setting it had: written (crash-safe)
 * when CreateTable or AlterTable sets it, removed when it is the default (0) or
 * the table is dropped. No-op without a dir; a failure to write is logged (warn),
 * the setting in memory stands. */
struct srv_table;
void srv_ckpt_ack_keep(struct srv_table *t);

/* A dropped table's checkpoint in --checkpoint-dir goes to history/ (waits for a
 * save of it in progress). No-op without a dir or without a file. */
void srv_ckpt_retire(const char *table);

/* The newest complete checkpoint of `table` in `dir` into path[cap]:
 * <dir>/<table>.ckpt, or where there is none the newest in <dir>/history/.
 * Errors: NOT_FOUND (neither), INVALID_ARGUMENT (path too long). */
int srv_ckpt_resolve(const char *dir, const char *table, char *path, size_t cap,
                     ember_error *err);

/* Loads the checkpoint at `path` into the table `name` (creating it from the
 * file's config when `create` and it does not exist) by filling a fresh table and
 * swapping it in, so calls on the old one never see a half-loaded table. On
 * success fills *out (if not NULL) with the file's header and *created (if not
 * NULL) with whether the table was created. `op` ("load", "restore") names it in
 * the progress log and ServerInfo. Errors: those of ember_ckpt_load,
 * NOT_FOUND (no such table and not `create`). */
int srv_ckpt_load_file(const char *path, const char *name, int create, const char *op,
                       ember_ckpt_meta *out, int *created, ember_error *err);

/* Progress of long saves and loads. A save (by the checkpointer), a Load and the
 * restore at start each log `event=checkpoint_progress op=save|load|restore
 * table=… rows=… total=… rows_per_s=… eta_s=…` at info level every
 * --progress-interval-ms (default 5000; 0: after every chunk of rows), and
 * publish their state for Admin/ServerInfo (progress_* fields), which `emberctl
 * save`/`load` poll to draw a progress line. When several run at once, the one
 * that reported last is shown. srv_ckpt_progress_get copies it: op "" when none
 * runs (op and table are NUL-terminated in op_cap/table_cap bytes). Thread-safe. */
void srv_ckpt_progress_get(char *op, size_t op_cap, char *table, size_t table_cap,
                           uint64_t *rows, uint64_t *total);

#endif
