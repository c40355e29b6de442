/*
 * test_util.h - fixtures shared by the unit tests.
 *
 * Each tests/unit/test_*.c is built alone into its own binary, so these are
 * static (inline, so a test that uses only some of them builds without
 * unused-function warnings) and every binary gets its own copy of the
 * counters. Include after <cmocka.h>.
 */
#ifndef HD_TEST_UTIL_H
#define HD_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cmocka.h>

#include "handlerd/handlerd.h"

/* ---- sayers: simple handlers answering with a fixed string -------------- */

/* How many sayers have been destroyed; tests that count reset it. */
static atomic_int destroyed;

/* A function answering with the string it was created with (its user
 * data). */
static inline hd_err say(const hd_event *ev, void *ud, hd_result *out) {
  (void)ev;
  return hd_result_set_string(out, ud);
}

static inline void count_destroy(void *p) {
  (void)p;
  atomic_fetch_add(&destroyed, 1);
}

/* A new simple handler answering `word` (not copied: a literal) whose
 * destruction counts in `destroyed`. */
static inline hd_handler *sayer(const char *word) {
  hd_handler *h = NULL;

  assert_int_equal(hd_simple_new(say, (void *)word, count_destroy, &h), HD_OK);
  return h;
}

/* ---- kinds and functions that do nothing useful ------------------------- */

/* A handle() that refuses every event with HD_EBUSY, never completing. */
static inline hd_err refusing_handle(hd_handler *h, const hd_event *ev,
                                     hd_done_fn *done, void *done_data) {
  (void)h;
  (void)ev;
  (void)done;
  (void)done_data;
  return HD_EBUSY;
}

/* A function that succeeds without setting a value. */
static inline hd_err noop(const hd_event *ev, void *user_data, hd_result *out) {
  (void)ev;
  (void)user_data;
  (void)out;
  return HD_OK;
}

/* ---- a fresh function table per test ------------------------------------ */

static inline int functions_setup(void **state) {
  hd_functions *fns;

  if (hd_functions_new(&fns) != HD_OK)
    return -1;
  *state = fns;
  return 0;
}

static inline int functions_teardown(void **state) {
  hd_functions_free(*state);
  return 0;
}

/* Removes a store directory made by a test: the SQLite file, its WAL and
 * journal files, then the directory. */
static inline void remove_store_dir(const char *dir) {
  static const char *const names[] = {"handlerd.db", "handlerd.db-wal",
                                      "handlerd.db-shm", "handlerd.db-journal"};
  char path[256];
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
    unlink(path);
  }
  rmdir(dir);
}

/* A fresh temporary directory for a store test: `base` is made by mkdtemp
 * from "$TMPDIR/<prefix>XXXXXX" (/tmp when TMPDIR is unset, empty or long),
 * `dir` is base/state (not created) and `db` (unless NULL) dir/handlerd.db.
 * 0, or -1 when mkdtemp failed. */
static inline int store_tmp_dirs(const char *prefix, char *base,
                                 size_t base_size, char *dir, size_t dir_size,
                                 char *db, size_t db_size) {
  const char *tmp = getenv("TMPDIR");
  snprintf(base, base_size, "%s/%sXXXXXX",
           tmp && *tmp && strlen(tmp) < 40 ? tmp : "/tmp", prefix);
  if (!mkdtemp(base))
    return -1;
  snprintf(dir, dir_size, "%s/state", base);
  if (db)
    snprintf(db, db_size, "%s/handlerd.db", dir);
  return 0;
}

/* Makes `dir` a read-only bind mount of itself, so that statvfs says
 * ST_RDONLY there (root ignores file modes, so a mode proves nothing).
 * 0, or -1 when this process cannot mount (not root, no CAP_SYS_ADMIN):
 * the caller skips. Undo with ro_unmount. */
static inline int ro_bind_mount(const char *dir) {
  /* The type is ignored for a bind; "none", not NULL, keeps valgrind
   * quiet. */
  if (mount(dir, dir, "none", MS_BIND, NULL) != 0)
    return -1;
  if (mount(dir, dir, "none", MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) != 0) {
    umount2(dir, MNT_DETACH);
    return -1;
  }
  return 0;
}

/* Mounts a tmpfs of `bytes` (mode 0700) on `dir`: a disk that fills up.
 * 0, or -1 when this process cannot mount (the caller skips). Undo with
 * ro_unmount. */
static inline int small_tmpfs_mount(const char *dir, size_t bytes) {
  char opts[64];
  snprintf(opts, sizeof(opts), "size=%zu,mode=0700", bytes);
  return mount("tmpfs", dir, "tmpfs", 0, opts) == 0 ? 0 : -1;
}

/* Undoes ro_bind_mount or small_tmpfs_mount; detaches it when busy. */
static inline void ro_unmount(const char *dir) {
  if (umount(dir) != 0)
    umount2(dir, MNT_DETACH);
}

#endif
