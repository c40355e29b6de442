/*
 * store_sqlite.c - the SQLite hd_store backend: one database file,
 * `<dir>/handlerd.db`, in WAL mode with synchronous=FULL, so a change is on
 * disk when put/del return. Here the vtable (put, del, load, close) and the
 * statements it runs; opening the file is store_sqlite_open.c, the journal
 * of async deliveries on the same connection store_sqlite_journal.c.
 *
 * Failures: a failed put or del is rolled back by SQLite (one statement,
 * one transaction) and leaves the connection usable, so a put works again
 * once there is room.
 *
 * Read-only file system: see store.h. read_only makes put and del (and the
 * journal's commit and prune) fail with a message before touching SQLite.
 *
 * Secrets: records carry handler secrets. They are never logged, the
 * copies made by load are wiped before being freed, and secure_delete makes
 * SQLite overwrite deleted content in the file.
 */
#include "store.h"
#include "store_record.h"
#include "store_sqlite_internal.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A put with a known id updates that row in place: same seq, so load keeps
 * the original order; created_at stays the first registration's time. */
static const char sq_put_sql[] =
    "INSERT INTO registrations (id, key, record, created_at)"
    " VALUES (?1, ?2, ?3, ?4)"
    " ON CONFLICT (id) DO UPDATE SET key = excluded.key,"
    " record = excluded.record";
static const char sq_del_sql[] = "DELETE FROM registrations WHERE id = ?1";
static const char sq_load_sql[] =
    "SELECT id, record FROM registrations ORDER BY seq";

hd_err hd_sq_prepare(sq_store *s, char *msg, size_t msg_size) {
  int rc;
  const struct {
    const char *sql;
    sqlite3_stmt **st;
  } stmts[] = {
      {sq_load_sql, &s->load}, {sq_put_sql, &s->put}, {sq_del_sql, &s->del}};
  size_t n = s->read_only ? 1 : sizeof(stmts) / sizeof(stmts[0]);
  for (size_t i = 0; i < n; i++) {
    rc = sqlite3_prepare_v3(s->db, stmts[i].sql, -1, SQLITE_PREPARE_PERSISTENT,
                            stmts[i].st, NULL);
    if (rc != SQLITE_OK) {
      hd_sq_db_msg(s, rc, "cannot prepare statements", msg, msg_size);
      return hd_sq_rc_err(rc);
    }
  }
  return HD_OK;
}

/* Resets `st` after a step that ended with `rc` and maps the outcome. On
 * failure fills `msg` with what SQLite said (never the bound values).
 * Holds lock. */
static hd_err finish_stmt(sq_store *s, sqlite3_stmt *st, int rc,
                          const char *what, char *msg, size_t msg_size) {
  hd_err err = HD_OK;
  if (rc != SQLITE_OK && rc != SQLITE_DONE) {
    hd_sq_db_msg(s, rc, what, msg, msg_size);
    err = hd_sq_rc_err(rc);
  }
  sqlite3_reset(st);
  /* Drop the caller's pointers (the request carries a secret). */
  sqlite3_clear_bindings(st);
  return err;
}

hd_err hd_sq_refuse_read_only(sq_store *s, const char *what, char *msg,
                              size_t msg_size) {
  hd_sq_set_msg(msg, msg_size,
                "%s: the database is read-only (its file system was read-only "
                "when handlerd started); %s until handlerd is restarted with "
                "it writable",
                s->path, what);
  return HD_EIO;
}

/* put and del on a database opened read-only. */
static hd_err refuse_read_only(sq_store *s, char *msg, size_t msg_size) {
  return hd_sq_refuse_read_only(s, "registrations cannot be changed", msg,
                                msg_size);
}

static hd_err sq_put(hd_store *hs, const char *id, const hd_registration *reg,
                     char *msg, size_t msg_size) {
  sq_store *s = hs->impl;
  sqlite3_stmt *st = s->put;
  uint8_t *rec = NULL;
  size_t len = 0;
  char why[256] = "";
  int rc;

  if (s->read_only)
    return refuse_read_only(s, msg, msg_size);
  /* Encoded before taking the lock: the lock is for SQLite only. */
  hd_err err = hd_store_record_encode(reg, &rec, &len, why, sizeof(why));
  if (err != HD_OK) {
    if (err == HD_ENOMEM)
      hd_sq_set_msg(msg, msg_size, "%s: out of memory", s->path);
    else
      hd_sq_set_msg(msg, msg_size, "%s: handler %s: %s", s->path, id, why);
    return err;
  }
  pthread_mutex_lock(&s->lock);
  rc = sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  if (rc == SQLITE_OK)
    rc = sqlite3_bind_text(st, 2, reg->key, -1, SQLITE_STATIC);
  if (rc == SQLITE_OK)
    /* An empty record (all defaults) must still be a (non-NULL) blob. */
    rc = len ? sqlite3_bind_blob64(st, 3, rec, len, SQLITE_STATIC)
             : sqlite3_bind_zeroblob(st, 3, 0);
  if (rc == SQLITE_OK)
    rc = sqlite3_bind_int64(st, 4, (sqlite3_int64)time(NULL));
  if (rc == SQLITE_OK)
    rc = sqlite3_step(st);
  err = finish_stmt(s, st, rc, NULL, msg, msg_size);
  pthread_mutex_unlock(&s->lock);
  explicit_bzero(rec, len); /* may hold a secret */
  free(rec);
  return err;
}

static hd_err sq_del(hd_store *hs, const char *id, char *msg, size_t msg_size) {
  sq_store *s = hs->impl;
  sqlite3_stmt *st = s->del;
  int rc;

  if (s->read_only)
    return refuse_read_only(s, msg, msg_size);
  pthread_mutex_lock(&s->lock);
  rc = sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  if (rc == SQLITE_OK)
    rc = sqlite3_step(st);
  hd_err err = finish_stmt(s, st, rc, NULL, msg, msg_size);
  if (err == HD_OK && sqlite3_changes(s->db) == 0)
    err = HD_ENOTFOUND;
  pthread_mutex_unlock(&s->lock);
  return err;
}

/* One loaded row: id '\0' record, in buf. */
typedef struct sq_row {
  struct sq_row *next;
  size_t size; /* of buf, for wiping */
  size_t len;  /* of the record */
  const unsigned char *rec;
  char buf[];
} sq_row;

static void free_rows(sq_row *r) {
  while (r) {
    sq_row *next = r->next;
    explicit_bzero(r->buf, r->size);
    free(r);
    r = next;
  }
}

/* Copies the current row of the load statement. Holds lock. */
static hd_err copy_row(sq_store *s, sqlite3_stmt *st, sq_row **out, char *msg,
                       size_t msg_size) {
  const unsigned char *id = sqlite3_column_text(st, 0);
  size_t idn = (size_t)sqlite3_column_bytes(st, 0);
  const void *rec = sqlite3_column_blob(st, 1);
  size_t len = (size_t)sqlite3_column_bytes(st, 1);

  if (!id || (!rec && len > 0)) {
    if (sqlite3_errcode(s->db) == SQLITE_NOMEM) {
      hd_sq_set_msg(msg, msg_size,
                    "%s: out of memory reading the registrations", s->path);
      return HD_ENOMEM;
    }
    hd_sq_set_msg(msg, msg_size, "%s: a registration row has a NULL column",
                  s->path);
    return HD_EIO;
  }
  size_t size = idn + 1 + len;
  sq_row *r = malloc(sizeof(*r) + size);
  if (!r) {
    hd_sq_set_msg(msg, msg_size, "%s: out of memory reading the registrations",
                  s->path);
    return HD_ENOMEM;
  }
  r->next = NULL;
  r->size = size;
  r->len = len;
  memcpy(r->buf, id, idn + 1);
  r->rec = (const unsigned char *)r->buf + idn + 1;
  if (len)
    memcpy(r->buf + idn + 1, rec, len);
  *out = r;
  return HD_OK;
}

/* Decodes r's record and calls fn with it; the decoded copy (secrets
 * included) is wiped afterwards. A record that cannot be decoded stops the
 * load with a message naming the handler. */
static hd_err call_with_record(sq_store *s, const sq_row *r,
                               hd_store_registration_fn *fn, void *ud,
                               char *msg, size_t msg_size) {
  hd_registration reg;
  char why[256] = "";
  hd_arena *a = hd_arena_new(1024);
  if (!a) {
    hd_sq_set_msg(msg, msg_size, "%s: out of memory reading the registrations",
                  s->path);
    return HD_ENOMEM;
  }
  hd_err err =
      hd_store_record_decode(r->rec, r->len, a, &reg, why, sizeof(why));
  if (err == HD_OK) {
    err = fn(r->buf, &reg, ud);
  } else if (err == HD_ENOMEM) {
    hd_sq_set_msg(msg, msg_size, "%s: out of memory reading the registrations",
                  s->path);
  } else {
    hd_sq_set_msg(msg, msg_size,
                  "%s: the record of handler %s cannot be read: %s", s->path,
                  r->buf, why);
    hd_sq_one_line(msg);
    err = HD_EIO;
  }
  hd_arena_wipe(a);
  hd_arena_free(a);
  return err;
}

/* Copies every row under the lock, then calls fn without it: fn may use
 * the store (e.g. delete a record it cannot restore) without deadlocking,
 * and sees one consistent snapshot. */
static hd_err sq_load(hd_store *hs, hd_store_registration_fn *fn, void *ud,
                      char *msg, size_t msg_size) {
  sq_store *s = hs->impl;
  sqlite3_stmt *st = s->load;
  sq_row *head = NULL, **tail = &head;
  hd_err err = HD_OK;
  int rc;

  pthread_mutex_lock(&s->lock);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if ((err = copy_row(s, st, tail, msg, msg_size)) != HD_OK)
      break;
    tail = &(*tail)->next;
  }
  if (err == HD_OK)
    err =
        finish_stmt(s, st, rc, "cannot read the registrations", msg, msg_size);
  else
    finish_stmt(s, st, SQLITE_OK, NULL, NULL, 0);
  pthread_mutex_unlock(&s->lock);

  for (sq_row *r = head; err == HD_OK && r; r = r->next)
    err = call_with_record(s, r, fn, ud, msg, msg_size);
  free_rows(head);
  return err;
}

void hd_sq_close(hd_store *hs) {
  sq_store *s = hs->impl;

  /* Its statements first: a connection with statements left does not
   * close. */
  hd_sq_journal_free(s->base.journal);
  s->base.journal = NULL;
  sqlite3_finalize(s->put);
  sqlite3_finalize(s->del);
  sqlite3_finalize(s->load);
  if (s->db && sqlite3_close(s->db) != SQLITE_OK)
    hd_log(HD_LOG_ERROR, "store: cannot close %s: %s", s->path,
           sqlite3_errmsg(s->db));
  pthread_mutex_destroy(&s->lock);
  free(s);
}

const hd_store_vtable hd_sq_vtable = {
    .name = "sqlite",
    .put = sq_put,
    .del = sq_del,
    .load = sq_load,
    .close = hd_sq_close,
};
