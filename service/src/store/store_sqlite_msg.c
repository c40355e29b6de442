/*
 * store_sqlite_msg.c - how the SQLite backend words a failure. Messages
 * name the file and say what SQLite said (for an I/O error also what it was
 * doing, and the errno when SQLite kept it); SQLITE_FULL is HD_EBUSY ("no
 * room, retry later").
 */
#include "store_sqlite_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void hd_sq_set_msg(char *msg, size_t msg_size, const char *fmt, ...) {
  va_list ap;
  if (!msg || msg_size == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(msg, msg_size, fmt, ap);
  va_end(ap);
}

void hd_sq_one_line(char *msg) {
  for (; msg && *msg; msg++)
    if (*msg == '\n' || *msg == '\r')
      *msg = ' ';
}

hd_err hd_sq_rc_err(int rc) {
  switch (rc & 0xff) {
  case SQLITE_NOMEM:
    return HD_ENOMEM;
  case SQLITE_FULL:
    return HD_EBUSY; /* no room now; may work later */
  default:
    return HD_EIO;
  }
}

/* What the I/O failure `ext` (an extended SQLITE_IOERR_* code) was doing,
 * or NULL. */
static const char *ioerr_doing(int ext) {
  switch (ext) {
  case SQLITE_IOERR_READ:
  case SQLITE_IOERR_SHORT_READ:
    return "reading";
  case SQLITE_IOERR_WRITE:
    return "writing";
  case SQLITE_IOERR_FSYNC:
  case SQLITE_IOERR_DIR_FSYNC:
    return "syncing";
  case SQLITE_IOERR_TRUNCATE:
    return "truncating";
  case SQLITE_IOERR_FSTAT:
    return "checking the size";
  case SQLITE_IOERR_LOCK:
  case SQLITE_IOERR_RDLOCK:
  case SQLITE_IOERR_UNLOCK:
  case SQLITE_IOERR_CHECKRESERVEDLOCK:
    return "locking";
  case SQLITE_IOERR_DELETE:
    return "deleting";
  case SQLITE_IOERR_SHMOPEN:
  case SQLITE_IOERR_SHMSIZE:
  case SQLITE_IOERR_SHMMAP:
  case SQLITE_IOERR_SHMLOCK:
    return "using the -shm file";
  default:
    return NULL;
  }
}

void hd_sq_db_msg(sq_store *s, int rc, const char *what, char *msg,
                  size_t msg_size) {
  int prim = rc & 0xff;
  int same = (sqlite3_errcode(s->db) & 0xff) == prim;
  const char *said = same ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
  const char *doing = NULL;
  int sys = 0;

  if (same && (prim == SQLITE_IOERR || prim == SQLITE_CANTOPEN)) {
    doing = ioerr_doing(sqlite3_extended_errcode(s->db));
    sys = sqlite3_system_errno(s->db);
  }
  char detail[160] = "";
  if (doing || sys)
    snprintf(detail, sizeof(detail), " (%s%s%s)", doing ? doing : "",
             doing && sys ? ": " : "", sys ? strerror(sys) : "");
  hd_sq_set_msg(msg, msg_size, "%s: %s%s%s%s", s->path, what ? what : "",
                what ? ": " : "", said, detail);
  hd_sq_one_line(msg);
}

void hd_sq_prefix_msg(sq_store *s, const char *what, char *msg,
                      size_t msg_size) {
  char cause[512];
  if (!msg || msg_size == 0)
    return;
  snprintf(cause, sizeof(cause), "%s", msg);
  hd_sq_set_msg(msg, msg_size, "%s: %s: %s", s->path, what, cause);
  hd_sq_one_line(msg);
}
