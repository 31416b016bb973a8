/*
 * durable.c — temp file, full writes, fsync, rename, fsync of the directory
 * (durable.h). The one place ember replaces a file.
 */
#define _GNU_SOURCE
#include "durable.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct ember_durable_file {
    int df_fd;
    char *df_target;        /* the path committed to */
    char df_temp[PATH_MAX];
};

/* Records where a call failed and returns its errno. */
static int fail_at(ember_durable_fail *fail, const char *step, const char *path, int e)
{
    if (fail) {
        fail->df_step = step;
        snprintf(fail->df_path, sizeof fail->df_path, "%s", path);
    }
    return e;
}

int ember_durable_create(const char *path, ember_durable_file **out, ember_durable_fail *fail)
{
    *out = NULL;
    ember_durable_file *f = calloc(1, sizeof *f);
    if (!f || !(f->df_target = strdup(path))) {
        free(f);
        return fail_at(fail, "malloc", path, ENOMEM);
    }
    /* O_EXCL makes the name ours even beside other writers of the same path,
     * with no counter shared between them. */
    int e = EEXIST;
    for (int n = 0; e == EEXIST && n < EMBER_DURABLE_TEMP_TRIES; n++) {
        int len = snprintf(f->df_temp, sizeof f->df_temp, "%s.tmp.%ld.%d", path,
                           (long)getpid(), n);
        if (len < 0 || len >= (int)sizeof f->df_temp) {
            e = fail_at(fail, "temp name", path, ENAMETOOLONG);
            break;
        }
        f->df_fd = open(f->df_temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (f->df_fd >= 0) {
            *out = f;
            return 0;
        }
        e = errno;
        if (e != EEXIST)
            fail_at(fail, "open", f->df_temp, e);
    }
    if (e == EEXIST)
        fail_at(fail, "temp name", path, e);
    free(f->df_target);
    free(f);
    return e;
}

const char *ember_durable_temp_path(const ember_durable_file *f)
{
    return f->df_temp;
}

/* Writes all len bytes at `*off` (pwrite), or at the file's offset when off is
 * NULL; retries EINTR and short writes. */
static int write_all(ember_durable_file *f, const void *p, size_t len, uint64_t *off,
                     ember_durable_fail *fail)
{
    const uint8_t *b = p;
    while (len) {
        ssize_t r = off ? pwrite(f->df_fd, b, len, (off_t)*off) : write(f->df_fd, b, len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) /* r == 0: no progress, do not spin */
            return fail_at(fail, "write", f->df_temp, r < 0 ? errno : EIO);
        b += r;
        len -= (size_t)r;
        if (off)
            *off += (uint64_t)r;
    }
    return 0;
}

int ember_durable_write(ember_durable_file *f, const void *p, size_t len,
                        ember_durable_fail *fail)
{
    return write_all(f, p, len, NULL, fail);
}

int ember_durable_pwrite(ember_durable_file *f, const void *p, size_t len, uint64_t off,
                         ember_durable_fail *fail)
{
    return write_all(f, p, len, &off, fail);
}

/* fsync of path's directory ("." for a bare name, "/" for "/name"). */
static int fsync_parent(const char *path, ember_durable_fail *fail)
{
    char dir[PATH_MAX] = ".";
    const char *slash = strrchr(path, '/');
    if (slash) {
        size_t len = slash == path ? 1 : (size_t)(slash - path);
        if (len >= sizeof dir)
            return fail_at(fail, "directory name", path, ENAMETOOLONG);
        memcpy(dir, path, len);
        dir[len] = '\0';
    }
    return ember_durable_fsync_dir(dir, fail);
}

int ember_durable_commit(ember_durable_file *f, ember_durable_fail *fail)
{
    int e = 0;
    if (fsync(f->df_fd))
        e = fail_at(fail, "fsync", f->df_temp, errno);
    if (close(f->df_fd) && !e)
        e = fail_at(fail, "close", f->df_temp, errno);
    f->df_fd = -1;
    if (!e && rename(f->df_temp, f->df_target))
        e = fail_at(fail, "rename", f->df_target, errno);
    if (e) {
        ember_durable_abort(f);
        return e;
    }
    e = fsync_parent(f->df_target, fail);
    f->df_temp[0] = '\0'; /* renamed: nothing to remove */
    ember_durable_abort(f);
    return e;
}

void ember_durable_abort(ember_durable_file *f)
{
    if (!f)
        return;
    if (f->df_fd >= 0)
        close(f->df_fd);
    if (f->df_temp[0])
        unlink(f->df_temp);
    free(f->df_target);
    free(f);
}

int ember_durable_fsync_dir(const char *dir, ember_durable_fail *fail)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return fail_at(fail, "open directory", dir, errno);
    int e = fsync(fd) ? fail_at(fail, "fsync directory", dir, errno) : 0;
    close(fd);
    return e;
}

int ember_durable_clean_temps(const char *dir, const char *ext,
                              void (*removed)(const char *path, void *arg), void *arg,
                              unsigned *n_removed, ember_durable_fail *fail)
{
    char mark[NAME_MAX + 1];
    unsigned n = 0;
    if (n_removed)
        *n_removed = 0;
    snprintf(mark, sizeof mark, "%s.tmp.", ext ? ext : "");
    DIR *d = opendir(dir);
    if (!d)
        return fail_at(fail, "open directory", dir, errno);
    struct dirent *e;
    while ((e = readdir(d))) {
        char p[PATH_MAX];
        if (!strstr(e->d_name, mark))
            continue;
        int len = snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (len < 0 || len >= (int)sizeof p || unlink(p))
            continue;
        n++;
        if (removed)
            removed(p, arg);
    }
    closedir(d);
    if (n_removed)
        *n_removed = n;
    return n ? ember_durable_fsync_dir(dir, fail) : 0;
}
