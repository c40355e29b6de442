/*
 * outbox_shared.c - the outbox on a shared journal (several replicas on one
 * database, journal.h: claim): what this replica delivers is what it
 * leases. Each turn of the outbox thread renews its leases (every third of
 * a lease), reaps expired ones (every lease: a replica that died gives its
 * deliveries back this way) and claims what is due (every 200 ms, or at
 * once when an accept left a delivery to the claim), and then, while it has
 * a webhook disabled, reads the webhooks' health to follow an EnableWebhook
 * made on another replica. The journal is called without the lock, as
 * everywhere in the outbox.
 */
#include "handlerd/log.h"
#include "outbox_internal.h"

#include <stdlib.h>
#include <string.h>

#define CLAIM_EVERY_MS 200
#define CLAIM_BATCH 256

typedef struct claimed {
  dlv *head;
  size_t n;
} claimed;

static hd_err take_claimed(const hd_delivery_row *row, void *ud) {
  claimed *c = ud;
  dlv *d = ob_dlv_copy(row);
  if (d == NULL)
    return HD_ENOMEM; /* the rest stay leased: reaped after the lease */
  d->ordered = row->ordered && row->ordering_key[0] != '\0';
  d->next = c->head;
  c->head = d;
  c->n++;
  return HD_OK;
}

/* Queues a claimed delivery, or says it must go back: this replica has not
 * heard of its webhook yet (registered a moment ago elsewhere). Locked. */
static int queue_claimed(hd_outbox *o, dlv *d) {
  ob_name *n = ob_name_get(o, d->row.handler_id, d->row.route, 0);
  if (hd_strmap_get(o->live, d->row.id, strlen(d->row.id)) != NULL) {
    ob_dlv_free(d); /* ours already */
    return 1;
  }
  if (n == NULL)
    return 0;
  if (hd_strmap_put(o->live, d->row.id, strlen(d->row.id), d) != HD_OK) {
    return 0;
  }
  if (d->row.state == HD_DELIVERY_IN_FLIGHT)
    d->row.state = HD_DELIVERY_PENDING;
  ob_enqueue(o, d);
  return 1;
}

/* At most one warning per QUIET_MS: a database outage would otherwise say
 * so five times a second (the store logs the outage and its end). */
#define QUIET_MS 10000

static void log_failure(hd_outbox *o, const char *what, hd_err err,
                        const char *msg) {
  int64_t now = ob_now_ms();
  if (now < o->shared_quiet_ms)
    return;
  o->shared_quiet_ms = now + QUIET_MS;
  hd_log(HD_LOG_WARN, "outbox: cannot %s: %s (further failures quiet for %d s)",
         what, msg[0] ? msg : hd_strerror(err), QUIET_MS / 1000);
}

static void claim(hd_outbox *o, int64_t now) {
  size_t live = hd_strmap_count(o->live);
  size_t most =
      o->cfg.max_pending < OB_LEASE_AHEAD ? o->cfg.max_pending : OB_LEASE_AHEAD;
  size_t room = live < most ? most - live : 0;
  claimed c = {NULL, 0};
  char msg[512] = "";
  hd_err err;
  dlv *next, *back = NULL;

  o->claim_now = 0;
  o->next_claim_ms = now + CLAIM_EVERY_MS;
  if (room == 0)
    return;
  if (room > CLAIM_BATCH)
    room = CLAIM_BATCH;
  pthread_mutex_unlock(&o->lock);
  err = o->journal->vt->claim(o->journal, now, room, take_claimed, &c, msg,
                              sizeof(msg));
  if (err != HD_OK)
    log_failure(o, "claim deliveries", err, msg);
  pthread_mutex_lock(&o->lock);
  for (dlv *d = c.head; d; d = next) {
    next = d->next;
    d->next = NULL;
    if (!queue_claimed(o, d)) {
      d->next = back;
      back = d;
    }
  }
  if (c.n == room)
    o->claim_now = 1; /* more may be due */
  if (back == NULL)
    return;
  pthread_mutex_unlock(&o->lock);
  for (dlv *d = back; d; d = next) {
    next = d->next;
    if (o->journal->vt->release(o->journal, d->row.id, msg, sizeof(msg)) !=
        HD_OK)
      log_failure(o, "give a lease back", HD_EIO, msg);
    ob_dlv_free(d);
  }
  pthread_mutex_lock(&o->lock);
}

/* A webhook this replica disabled whose health row says healthy again:
 * EnableWebhook was called on another replica, or another replica's
 * delivery succeeded since. Unlocked (the journal's
 * callback); the lock is taken per row. */
static hd_err enable_from_row(const hd_endpoint_row *row, void *ud) {
  hd_outbox *o = ud;
  ob_name *n;

  /* Healthy: enabled, or delivered to by another replica since. A row
   * with failures is another replica's run of them, not an enable. */
  if (row->disabled_ms != 0 || row->failures != 0)
    return HD_OK;
  pthread_mutex_lock(&o->lock);
  n = ob_name_get(o, row->handler_id, row->route, 0);
  /* health_dirty: our own disable is not journaled yet; the row is older. */
  if (n != NULL && n->disabled_ms != 0 && !n->health_dirty) {
    n->disabled_ms = 0;
    n->failures = 0;
    n->first_failure_ms = 0;
    ob_unblock(o, n);
    hd_log(HD_LOG_INFO,
           "outbox: webhook of handler %s%s%s enabled (by another replica)",
           n->handler_id, n->route[0] ? " route " : "", n->route);
  }
  pthread_mutex_unlock(&o->lock);
  return HD_OK;
}

/* Enables what another replica enabled, when this one has something
 * disabled. Locked on entry and return. */
static void follow_enables(hd_outbox *o) {
  char msg[512] = "";
  int any = 0;
  hd_err err;

  for (ob_name *n = o->all_names; n && !any; n = n->next_all)
    any = n->disabled_ms != 0;
  if (!any)
    return;
  pthread_mutex_unlock(&o->lock);
  err = o->journal->vt->load_endpoints(o->journal, enable_from_row, o, msg,
                                       sizeof(msg));
  if (err != HD_OK)
    log_failure(o, "read webhooks' health", err, msg);
  pthread_mutex_lock(&o->lock);
}

void ob_shared_turn(hd_outbox *o, int64_t now) {
  char msg[512] = "";
  hd_err err;

  if (now >= o->next_renew_ms) {
    o->next_renew_ms = now + o->cfg.lease_ms / 3;
    pthread_mutex_unlock(&o->lock);
    if ((err = o->journal->vt->renew(o->journal, now, msg, sizeof(msg))) !=
        HD_OK)
      log_failure(o, "renew leases", err, msg);
    pthread_mutex_lock(&o->lock);
  }
  if (now >= o->next_reap_ms) {
    size_t reaped = 0;
    o->next_reap_ms = now + o->cfg.lease_ms;
    pthread_mutex_unlock(&o->lock);
    err = o->journal->vt->reap(o->journal, now, &reaped, msg, sizeof(msg));
    if (err != HD_OK)
      log_failure(o, "reap expired leases", err, msg);
    else if (reaped > 0)
      hd_log(HD_LOG_WARN,
             "outbox: %zu deliveries leased by a replica that stopped "
             "renewing went back to the queue",
             reaped);
    pthread_mutex_lock(&o->lock);
  }
  if (o->claim_now || now >= o->next_claim_ms) {
    claim(o, now);
    follow_enables(o);
  }
}

int64_t ob_shared_next(const hd_outbox *o) {
  int64_t t = o->next_claim_ms;
  if (o->next_renew_ms < t)
    t = o->next_renew_ms;
  if (o->next_reap_ms < t)
    t = o->next_reap_ms;
  return t;
}

void ob_shared_release_all(hd_outbox *o) {
  char msg[512] = "";
  hd_err err = o->journal->vt->release(o->journal, NULL, msg, sizeof(msg));
  if (err != HD_OK)
    log_failure(o, "give leases back at stop", err, msg);
}
