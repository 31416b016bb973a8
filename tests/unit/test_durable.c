/* test_durable.c — storage/durable.h: a file replaced whole or not at all. A
 * commit puts the new file in place and leaves no temp file; a write that fails
 * part-way (a real one: the file-size limit, RLIMIT_FSIZE, makes write() fail
 * with EFBIG in the middle of the data), an abort or a failed rename leaves the
 * previous file whole and no temp file; a crash before the rename (a child
 * killed with SIGKILL) leaves the previous file whole and a stray temp file,
 * which ember_durable_clean_temps removes. */
#define _GNU_SOURCE
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "storage/durable.h"
#include "test_util.h"

/* ---- helpers ---------------------------------------------------------------- */

static void put_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(text, 1, strlen(text), f), strlen(text));
    ck_assert_int_eq(fclose(f), 0);
}

/* 1 if the file at path holds exactly `text`. */
static int file_is(const char *path, const char *text)
{
    char buf[4096];
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return n == strlen(text) && !memcmp(buf, text, n);
}

#define OLD_TEXT "the previous file, whole"

/* ---- commit ----------------------------------------------------------------- */

START_TEST(commit_replaces_previous_file)
{
    tdir d;
    char p[512];
    ember_durable_file *f;
    ember_durable_fail fail;
    tdir_make(&d);
    tdir_file(&d, "t.ckpt", p);
    put_file(p, OLD_TEXT);
    ck_assert_int_eq(ember_durable_create(p, &f, &fail), 0);
    const char *tmp = ember_durable_temp_path(f);
    ck_assert_msg(!strncmp(tmp, p, strlen(p)) && strstr(tmp, ".tmp."), "temp %s", tmp);
    ck_assert_int_eq(tdir_count(&d, ".tmp."), 1);
    ck_assert_int_eq(ember_durable_write(f, "xew ", 4, &fail), 0);
    ck_assert_int_eq(ember_durable_write(f, "contents", 8, &fail), 0);
    ck_assert_int_eq(ember_durable_pwrite(f, "n", 1, 0, &fail), 0); /* a header put last */
    ck_assert(file_is(p, OLD_TEXT)); /* nothing seen before the commit */
    ck_assert_int_eq(ember_durable_commit(f, &fail), 0);
    ck_assert(file_is(p, "new contents"));
    ck_assert_int_eq(tdir_count(&d, ".tmp."), 0);
    ck_assert_int_eq(tdir_count(&d, ""), 1);
    tdir_remove(&d);
}
END_TEST

START_TEST(commit_creates_missing_file)
{
    tdir d;
    char p[512];
    ember_durable_file *f;
    tdir_make(&d);
    tdir_file(&d, "fresh", p);
    ck_assert_int_eq(ember_durable_create(p, &f, NULL), 0);
    ck_assert_int_eq(ember_durable_write(f, "", 0, NULL), 0);
    ck_assert_int_eq(ember_durable_write(f, "abc", 3, NULL), 0);
    ck_assert_int_eq(ember_durable_commit(f, NULL), 0);
    ck_assert(file_is(p, "abc"));
    ck_assert_int_eq(tdir_count(&d, ""), 1);
    tdir_remove(&d);
}
END_TEST

/* Two writers of one path get temp files of their own; the last commit wins. */
START_TEST(two_writers_of_one_path)
{
    tdir d;
    char p[512];
    ember_durable_file *a, *b;
    tdir_make(&d);
    tdir_file(&d, "t.ckpt", p);
    ck_assert_int_eq(ember_durable_create(p, &a, NULL), 0);
    ck_assert_int_eq(ember_durable_create(p, &b, NULL), 0);
    ck_assert_str_ne(ember_durable_temp_path(a), ember_durable_temp_path(b));
    ck_assert_int_eq(ember_durable_write(a, "first", 5, NULL), 0);
    ck_assert_int_eq(ember_durable_write(b, "second", 6, NULL), 0);
    ck_assert_int_eq(ember_durable_commit(a, NULL), 0);
    ck_assert(file_is(p, "first"));
    ck_assert_int_eq(ember_durable_commit(b, NULL), 0);
    ck_assert(file_is(p, "second"));
    ck_assert_int_eq(tdir_count(&d, ""), 1);
    tdir_remove(&d);
}
END_TEST

/* ---- failures leave the previous file whole --------------------------------- */

/* A write that fails part-way: with the file-size limit at 4 KiB, write()
 * takes the bytes below the limit and then fails with EFBIG (SIGXFSZ ignored).
 * In a child, so the limit ends with it; it exits 0 if every check held. */
static int child_write_past_limit(const char *path)
{
    struct rlimit lim = {4096, 4096};
    static char big[64 * 1024];
    ember_durable_file *f;
    ember_durable_fail fail;
    signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &lim))
        return 10;
    if (ember_durable_create(path, &f, &fail))
        return 11;
    memset(big, 'n', sizeof big);
    if (ember_durable_write(f, big, 3000, &fail)) /* below the limit: taken */
        return 12;
    int e = ember_durable_write(f, big, sizeof big, &fail); /* crosses it */
    if (e != EFBIG)
        return 13;
    if (strcmp(fail.df_step, "write") || strcmp(fail.df_path, ember_durable_temp_path(f)))
        return 14;
    struct stat st;
    if (stat(ember_durable_temp_path(f), &st) || st.st_size != 4096) /* part-way indeed */
        return 15;
    ember_durable_abort(f);
    return 0;
}

START_TEST(failed_write_keeps_previous_file)
{
    tdir d;
    char p[512];
    tdir_make(&d);
    tdir_file(&d, "t.ckpt", p);
    put_file(p, OLD_TEXT);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(child_write_past_limit(p));
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child check %d failed",
                  WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    ck_assert(file_is(p, OLD_TEXT));
    ck_assert_int_eq(tdir_count(&d, ".tmp."), 0);
    tdir_remove(&d);
}
END_TEST

START_TEST(abort_keeps_previous_file)
{
    tdir d;
    char p[512];
    ember_durable_file *f;
    tdir_make(&d);
    tdir_file(&d, "t.ckpt", p);
    put_file(p, OLD_TEXT);
    ck_assert_int_eq(ember_durable_create(p, &f, NULL), 0);
    ck_assert_int_eq(ember_durable_write(f, "half", 4, NULL), 0);
    ember_durable_abort(f);
    ember_durable_abort(NULL);
    ck_assert(file_is(p, OLD_TEXT));
    ck_assert_int_eq(tdir_count(&d, ""), 1);
    tdir_remove(&d);
}
END_TEST

/* The rename fails (a directory stands at the path): the temp file goes, the
 * directory stays. */
START_TEST(failed_rename_removes_temp)
{
    tdir d;
    char p[512], inner[600];
    ember_durable_file *f;
    ember_durable_fail fail;
    tdir_make(&d);
    tdir_file(&d, "t.ckpt", p);
    ck_assert_int_eq(mkdir(p, 0755), 0);
    snprintf(inner, sizeof inner, "%s/keep", p);
    put_file(inner, OLD_TEXT);
    ck_assert_int_eq(ember_durable_create(p, &f, NULL), 0);
    ck_assert_int_eq(ember_durable_write(f, "new", 3, NULL), 0);
    int e = ember_durable_commit(f, &fail);
    ck_assert_msg(e == EISDIR || e == ENOTEMPTY || e == EEXIST, "%s", strerror(e));
    ck_assert_str_eq(fail.df_step, "rename");
    ck_assert_str_eq(fail.df_path, p);
    ck_assert(file_is(inner, OLD_TEXT));
    ck_assert_int_eq(tdir_count(&d, ".tmp."), 0);
    unlink(inner);
    tdir_remove(&d);
}
END_TEST

/* A crash before the rename: the child writes its temp file and is killed.
 * The previous file is whole; the stray temp is there until the cleanup, which
 * removes it and only it. */
static void count_removed(const char *path, void *arg)
{
    ck_assert_ptr_nonnull(strstr(path, ".ckpt.tmp."));
    (*(int *)arg)++;
}

START_TEST(crash_before_rename_leaves_previous_file_and_a_temp)
{
    tdir d;
    char p[512], other[512];
    tdir_make(&d);
    tdir_file(&d, "t.ckpt", p);
    put_file(p, OLD_TEXT);
    put_file(tdir_file(&d, "notes.txt.tmp.1.0", other), "not a checkpoint's temp");
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        ember_durable_file *f;
        if (ember_durable_create(p, &f, NULL) || ember_durable_write(f, "new", 3, NULL))
            _exit(1);
        raise(SIGKILL);
        _exit(2);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    ck_assert(file_is(p, OLD_TEXT));
    ck_assert_int_eq(tdir_count(&d, ".ckpt.tmp."), 1);
    int calls = 0;
    unsigned n = 99;
    ember_durable_fail fail;
    ck_assert_int_eq(ember_durable_clean_temps(d.path, ".ckpt", count_removed, &calls, &n,
                                               &fail), 0);
    ck_assert_int_eq(calls, 1);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(tdir_count(&d, ".ckpt.tmp."), 0);
    ck_assert(file_is(p, OLD_TEXT));
    ck_assert(file_is(other, "not a checkpoint's temp"));
    /* nothing left to clean */
    ck_assert_int_eq(ember_durable_clean_temps(d.path, ".ckpt", NULL, NULL, &n, NULL), 0);
    ck_assert_uint_eq(n, 0);
    tdir_remove(&d);
}
END_TEST

/* ---- names and directories -------------------------------------------------- */

START_TEST(bad_paths_say_where)
{
    static char longp[PATH_MAX + 16];
    ember_durable_file *f = (ember_durable_file *)&f;
    ember_durable_fail fail;
    memset(longp, 'a', sizeof longp - 1);
    longp[0] = '/';
    ck_assert_int_eq(ember_durable_create(longp, &f, &fail), ENAMETOOLONG);
    ck_assert_ptr_null(f);
    ck_assert_str_eq(fail.df_step, "temp name");
    ck_assert_int_eq(ember_durable_create("/nonexistent-ember-dir/t.ckpt", &f, &fail), ENOENT);
    ck_assert_str_eq(fail.df_step, "open");
    ck_assert_ptr_nonnull(strstr(fail.df_path, "/nonexistent-ember-dir/t.ckpt.tmp."));
    ck_assert_int_eq(ember_durable_fsync_dir("/nonexistent-ember-dir", &fail), ENOENT);
    ck_assert_str_eq(fail.df_step, "open directory");
    ck_assert_str_eq(fail.df_path, "/nonexistent-ember-dir");
    ck_assert_int_eq(ember_durable_clean_temps("/nonexistent-ember-dir", "", NULL, NULL, NULL,
                                               &fail), ENOENT);
    ck_assert_int_eq(ember_durable_fsync_dir("/", NULL), 0);
    ck_assert_int_eq(ember_durable_fsync_dir(".", NULL), 0);
}
END_TEST

/* A bare name lives in "."; its directory is fsynced there (in a child: the
 * test changes directory). */
START_TEST(bare_name_commits_in_cwd)
{
    tdir d;
    char p[512];
    tdir_make(&d);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        ember_durable_file *f;
        if (chdir(d.path) || ember_durable_create("bare", &f, NULL) ||
            ember_durable_write(f, "abc", 3, NULL) || ember_durable_commit(f, NULL))
            _exit(1);
        _exit(0);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ck_assert(file_is(tdir_file(&d, "bare", p), "abc"));
    ck_assert_int_eq(tdir_count(&d, ""), 1);
    tdir_remove(&d);
}
END_TEST

static Suite *durable_suite(void)
{
    Suite *s = suite_create("durable");
    TCase *c = tcase_create("commit");
    tcase_add_test(c, commit_replaces_previous_file);
    tcase_add_test(c, commit_creates_missing_file);
    tcase_add_test(c, two_writers_of_one_path);
    tcase_add_test(c, bare_name_commits_in_cwd);
    suite_add_tcase(s, c);
    TCase *f = tcase_create("failures");
    tcase_add_test(f, failed_write_keeps_previous_file);
    tcase_add_test(f, abort_keeps_previous_file);
    tcase_add_test(f, failed_rename_removes_temp);
    tcase_add_test(f, crash_before_rename_leaves_previous_file_and_a_temp);
    tcase_add_test(f, bad_paths_say_where);
    suite_add_tcase(s, f);
    return s;
}

int main(void)
{
    return tu_run(durable_suite());
}
