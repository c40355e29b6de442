/*
 * store_sqlite_migrate.c - schema 1 (rows of AddHandlerRequest bytes, the
 * API's format) to schema 2 (rows of the store's own record), and schema 2
 * to 3 (the outbox's journal: its tables are created, empty). A schema-1
 * database goes 1 -> 2 -> 3 in the caller's one transaction.
 *
 * All in the caller's one transaction: create registrations_v2, convert
 * every row in seq order keeping seq, id and created_at, carry the
 * AUTOINCREMENT high-water mark (so a seq once used is never reused, as
 * before), drop the old table, rename the new one, set user_version 2.
 * Until COMMIT the database file holds schema 1 unchanged (the new pages
 * are WAL frames without a commit record), so a kill -9 anywhere in here
 * leaves a database that the next start migrates again from scratch.
 *
 * A row that is not a valid AddHandlerRequest stops the migration and the
 * start, naming the handler, as the load of such a row did before: nothing
 * acknowledged is dropped silently. The old table's content is overwritten
 * when it is dropped (secure_delete is on): it held the secrets too.
 *
 * 2 to 3 adds tables and changes no row, so it is the same statements as
 * a new database's (SQ_JOURNAL_V3), then user_version 3.
 */
#include "store_record.h"
#include "store_sqlite_internal.h"
#include "store_v1_request.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void (*hd_sq_migrate_hook)(const char *step);

static void step(const char *name) {
  if (hd_sq_migrate_hook)
    hd_sq_migrate_hook(name);
}

static const char create_sql[] = "CREATE TABLE registrations_v2 " SQ_TABLE_V2;
static const char select_sql[] = "SELECT seq, id, request, created_at"
                                 " FROM registrations ORDER BY seq";
static const char insert_sql[] =
    "INSERT INTO registrations_v2 (seq, id, key, record, created_at)"
    " VALUES (?1, ?2, ?3, ?4, ?5)";
/* The old table's high-water mark, when above what the copy reached. */
static const char sequence_sql[] =
    "INSERT INTO sqlite_sequence (name, seq)"
    " SELECT 'registrations_v2', seq FROM sqlite_sequence"
    "  WHERE name = 'registrations' AND NOT EXISTS (SELECT 1 FROM"
    "   sqlite_sequence WHERE name = 'registrations_v2');"
    "UPDATE sqlite_sequence SET seq = max(seq, (SELECT seq FROM"
    "  sqlite_sequence WHERE name = 'registrations'))"
    " WHERE name = 'registrations_v2'"
    "  AND EXISTS (SELECT 1 FROM sqlite_sequence"
    "   WHERE name = 'registrations');";

/* Converts the current row of `sel` and inserts it with `ins`. */
static hd_err copy_row(sqlite3_stmt *sel, sqlite3_stmt *ins, int *rc, char *msg,
                       size_t msg_size) {
  const char *id = (const char *)sqlite3_column_text(sel, 1);
  const void *req = sqlite3_column_blob(sel, 2);
  size_t len = (size_t)sqlite3_column_bytes(sel, 2);
  hd_registration reg;
  uint8_t *rec = NULL;
  size_t rec_len = 0;
  char why[256] = "";

  if (!id) {
    snprintf(msg, msg_size, "a row (seq %lld) has no id",
             (long long)sqlite3_column_int64(sel, 0));
    return HD_EIO;
  }
  hd_arena *a = hd_arena_new(1024);
  if (!a)
    return HD_ENOMEM;
  /* Its key column is the request's key (the control plane saved it so);
   * the request's is the one the restore used, so it is the one kept. */
  hd_err err = hd_store_v1_decode(req, len, a, &reg, why, sizeof(why));
  if (err == HD_OK)
    err = hd_store_record_encode(&reg, &rec, &rec_len, why, sizeof(why));
  if (err == HD_EINVAL) {
    snprintf(msg, msg_size, "handler %s: its saved request: %s", id, why);
    err = HD_EIO;
  }
  if (err == HD_OK) {
    *rc = sqlite3_bind_int64(ins, 1, sqlite3_column_int64(sel, 0));
    if (*rc == SQLITE_OK)
      *rc = sqlite3_bind_text(ins, 2, id, -1, SQLITE_STATIC);
    if (*rc == SQLITE_OK)
      *rc = sqlite3_bind_text(ins, 3, reg.key, -1, SQLITE_STATIC);
    if (*rc == SQLITE_OK)
      *rc = rec_len ? sqlite3_bind_blob64(ins, 4, rec, rec_len, SQLITE_STATIC)
                    : sqlite3_bind_zeroblob(ins, 4, 0);
    if (*rc == SQLITE_OK)
      *rc = sqlite3_bind_int64(ins, 5, sqlite3_column_int64(sel, 3));
    if (*rc == SQLITE_OK && (*rc = sqlite3_step(ins)) == SQLITE_DONE)
      *rc = SQLITE_OK;
    /* Keep the error for the caller's message: reset repeats it. */
    sqlite3_reset(ins);
    sqlite3_clear_bindings(ins);
    if (*rc != SQLITE_OK)
      err = HD_EIO;
  }
  if (rec) {
    explicit_bzero(rec, rec_len);
    free(rec);
  }
  hd_arena_wipe(a);
  hd_arena_free(a);
  return err;
}

hd_err hd_sq_migrate_v1(sqlite3 *db, int *rc, char *msg, size_t msg_size) {
  sqlite3_stmt *sel = NULL, *ins = NULL;
  hd_err err = HD_OK;

  step("begin");
  *rc = sqlite3_exec(db, create_sql, NULL, NULL, NULL);
  if (*rc == SQLITE_OK)
    *rc = sqlite3_prepare_v2(db, select_sql, -1, &sel, NULL);
  if (*rc == SQLITE_OK)
    *rc = sqlite3_prepare_v2(db, insert_sql, -1, &ins, NULL);
  while (*rc == SQLITE_OK && err == HD_OK) {
    int r = sqlite3_step(sel);
    if (r == SQLITE_DONE)
      break;
    if (r != SQLITE_ROW) {
      *rc = r;
      break;
    }
    err = copy_row(sel, ins, rc, msg, msg_size);
    if (err == HD_OK)
      step("row");
  }
  sqlite3_finalize(sel);
  sqlite3_finalize(ins);
  if (*rc == SQLITE_OK && err == HD_OK) {
    step("copied");
    *rc = sqlite3_exec(db, sequence_sql, NULL, NULL, NULL);
  }
  if (*rc == SQLITE_OK && err == HD_OK) {
    *rc = sqlite3_exec(db, "DROP TABLE registrations", NULL, NULL, NULL);
    if (*rc == SQLITE_OK)
      step("dropped");
  }
  if (*rc == SQLITE_OK && err == HD_OK) {
    *rc = sqlite3_exec(db,
                       "ALTER TABLE registrations_v2 RENAME TO registrations;"
                       "PRAGMA user_version = 2;",
                       NULL, NULL, NULL);
    if (*rc == SQLITE_OK)
      step("renamed");
  }
  if (*rc != SQLITE_OK)
    return HD_EIO;
  return err;
}

hd_err hd_sq_migrate_v2(sqlite3 *db, int *rc) {
  *rc = sqlite3_exec(db, SQ_JOURNAL_V3 "PRAGMA user_version = 3;", NULL, NULL,
                     NULL);
  if (*rc != SQLITE_OK)
    return HD_EIO;
  step("journal");
  return HD_OK;
}
