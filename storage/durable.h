/*
 * durable.h — replacing a file so that a crash leaves the old one or the new one,
 * never a mix (what checkpoints and emberctl's export files are written with).
 *
 * A file is written under a temp name beside it, `<path>.tmp.<pid>.<n>` (the
 * first free n, created with O_EXCL so that two writers of one path never share
 * a temp file), and committed: fsync, close, rename over `path`, fsync of the
 * directory so that the rename itself survives a crash. A write that fails, or
 * an abort, removes the temp file and leaves `path` as it was. A crash before
 * the rename leaves `path` as it was and a stray temp file, which
 * ember_durable_clean_temps removes.
 *
 * Errors: every fallible call returns 0 or an errno value, and fills the
 * optional `ember_durable_fail *` with the step that failed and the file it was
 * on, so the caller words the message in its own vocabulary. This header needs
 * nothing of storage's status.h, so that code built on libember's ember.h
 * (emberctl) can use it too. Besides the errno of the failing call:
 *   ENAMETOOLONG, step "temp name" or "directory name": a name that does not fit
 *                PATH_MAX with its suffix;
 *   EEXIST, step "temp name": no free temp name after EMBER_DURABLE_TEMP_TRIES;
 *   ENOMEM, step "malloc";
 *   EIO, step "write": the kernel took no byte of a write (rather than spin).
 *
 * Thread-safety: a file belongs to its caller; different files (of one path
 * too) may be written from different threads at once.
 */
#ifndef EMBER_DURABLE_H
#define EMBER_DURABLE_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Temp names tried (n = 0, 1, …) before EEXIST. */
#define EMBER_DURABLE_TEMP_TRIES 1000

/* Where a call failed: df_step names the call ("open", "write", "fsync", "close",
 * "rename", "open directory", "fsync directory", "temp name", "directory name",
 * "malloc"), df_path the file or directory it was on (the temp file for writes,
 * fsync and close; `path` for rename; the directory for the last two). */
typedef struct ember_durable_fail {
    const char *df_step;     /* static */
    char df_path[PATH_MAX];
} ember_durable_fail;

/* A file being written under its temp name. */
typedef struct ember_durable_file ember_durable_file;

/* Creates the temp file for `path` (mode 0644) and returns it in *out; end it
 * with ember_durable_commit or ember_durable_abort. `path` is not touched.
 * Errors: ENAMETOOLONG, EEXIST ("temp name"), ENOMEM, or open's errno. */
int ember_durable_create(const char *path, ember_durable_file **out, ember_durable_fail *fail);

/* The temp file's name (valid until commit or abort). */
const char *ember_durable_temp_path(const ember_durable_file *f);

/* Appends p[len] to the temp file, retrying short writes and EINTR. Errors:
 * write's errno (ENOSPC, EFBIG, …), EIO if no byte was taken. After an error
 * the caller aborts (what was written is not known). */
int ember_durable_write(ember_durable_file *f, const void *p, size_t len,
                        ember_durable_fail *fail);

/* Writes p[len] at offset `off` of the temp file (a header whose counts are
 * known only at the end); the append position does not move. Errors: as
 * ember_durable_write. */
int ember_durable_pwrite(ember_durable_file *f, const void *p, size_t len, uint64_t off,
                         ember_durable_fail *fail);

/* fsyncs and closes the temp file, renames it over `path` and fsyncs the
 * directory. Frees `f` whatever happens. On an error of fsync, close or rename
 * the temp file is removed and `path` is as it was; on an error of the
 * directory's open or fsync (steps "open directory", "fsync directory",
 * "directory name") the new file is in place at `path` but may not survive a
 * crash. */
int ember_durable_commit(ember_durable_file *f, ember_durable_fail *fail);

/* Closes and removes the temp file and frees `f`; `path` is untouched. NULL is a
 * no-op. */
void ember_durable_abort(ember_durable_file *f);

/* fsyncs the directory `dir`, so that a rename, link or unlink in it survives a
 * crash. Errors: open's or fsync's errno (steps "open directory", "fsync
 * directory"). */
int ember_durable_fsync_dir(const char *dir, ember_durable_fail *fail);

/* Removes the temp files that writes of `<dir>/<name><ext>` left behind (a
 * crash before the rename): every entry of `dir` whose name holds
 * "<ext>.tmp." (ext "" : ".tmp."). Only for a caller that knows no writer is
 * running in `dir` (a server holding the directory's lock). Calls
 * `removed(path, arg)` (if not NULL) for each file removed, counts them in
 * *n_removed (if not NULL) and fsyncs `dir` when there were any. Errors: opendir's
 * errno (step "open directory"); a file that cannot be removed is skipped. */
int ember_durable_clean_temps(const char *dir, const char *ext,
                              void (*removed)(const char *path, void *arg), void *arg,
                              unsigned *n_removed, ember_durable_fail *fail);

#ifdef __cplusplus
}
#endif

#endif /* EMBER_DURABLE_H */
