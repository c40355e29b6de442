/*
 * The delivery RPCs: ListDeliveries, GetDelivery, Redeliver, Replay and
 * EnableWebhook, over the async outbox (outbox/outbox.h).
 *
 * Each reads or writes the journal, a database that may be slow, so none
 * runs on a completion-queue thread: the queue thread unpacks and checks
 * the request (everything that needs no database: the outbox is there, the
 * required fields, the bounds, the page token) and queues the call for the
 * control thread (admin.c), which asks the outbox and sends the reply.
 * Protobuf types stop here: the outbox sees plain C (hd_delivery_filter,
 * ids), and its rows are converted in the call's arena.
 */
#include "handlers/v1/handlers.pb-c.h"
#include "outbox.h"
#include "rpc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE_SIZE_DEFAULT 100
#define PAGE_SIZE_MAX 1000
#define REPLAY_LIMIT_DEFAULT 1000
#define REPLAY_LIMIT_MAX 10000

/* The outbox, or NULL after ending the call FAILED_PRECONDITION: without
 * --state-dir there is no journal, so no async delivery at all. */
static hd_outbox *outbox_or_finish(call *c) {
  hd_outbox *o = c->srv->cfg.outbox;
  if (!o)
    call_finish(c, GRPC_STATUS_FAILED_PRECONDITION,
                "async delivery needs --state-dir or --database");
  return o;
}

/* 1 when `state` is a DeliveryState (0, unspecified, included); else ends
 * the call INVALID_ARGUMENT. protobuf-c keeps an unknown enum value as the
 * number it read, so anything may arrive. */
static int state_ok(call *c, int state) {
  if (state >= 0 && state <= HD_DELIVERY_DEAD)
    return 1;
  call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
              "state %d is not a DeliveryState (0 to %d)", state,
              HD_DELIVERY_DEAD);
  return 0;
}

/* 1 when the times are a range (0: open); else ends the call. */
static int range_ok(call *c, int64_t since_ms, int64_t until_ms) {
  const char *bad = since_ms < 0 ? "since_ms" : until_ms < 0 ? "until_ms" : 0;
  if (bad) {
    call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
                "%s is negative (Unix milliseconds)", bad);
    return 0;
  }
  if (until_ms && until_ms <= since_ms) {
    call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
                "until_ms (%" PRId64 ") is not after since_ms (%" PRId64 ")",
                until_ms, since_ms);
    return 0;
  }
  return 1;
}

/* An id the outbox has no delivery for. The outbox's own message may not
 * name it; the caller's answer always does. */
static void finish_not_found(call *c, const char *id) {
  call_finish(c, GRPC_STATUS_NOT_FOUND, "no delivery with id '%s'", id);
}

/* ---- conversions ---------------------------------------------------------
 */

static char *dup_or_empty(hd_arena *a, const char *s) {
  return hd_arena_strdup(a, s ? s : "");
}

/* A journal row -> Delivery, in `a`. The row's ids are arrays inside the
 * row, which may not outlive this call: they are copied. */
static Handlers__V1__Delivery *delivery_to_pb(hd_arena *a,
                                              const hd_delivery_row *r) {
  Handlers__V1__Delivery *d = hd_arena_alloc(a, sizeof(*d));
  if (!d)
    return NULL;
  handlers__v1__delivery__init(d);
  d->delivery_id = hd_arena_strdup(a, r->id);
  d->event_id = hd_arena_strdup(a, r->event_id);
  if (!d->delivery_id || !d->event_id)
    return NULL;
  /* The rest are the arena's already (outbox.h): borrowed. */
  d->key = (char *)(r->key ? r->key : "");
  d->handler_id = (char *)(r->handler_id ? r->handler_id : "");
  d->route = (char *)(r->route ? r->route : "");
  d->event = (char *)(r->event_name ? r->event_name : "");
  d->ordering_key = (char *)(r->ordering_key ? r->ordering_key : "");
  d->state = (Handlers__V1__DeliveryState)r->state;
  d->attempts = r->attempts > 0 ? (uint32_t)r->attempts : 0;
  d->created_at_ms = r->created_ms;
  d->next_attempt_at_ms = r->next_ms;
  d->last_http_status = r->last_status;
  d->last_error = (char *)(r->last_error ? r->last_error : "");
  return d;
}

static Handlers__V1__DeliveryAttempt *attempt_to_pb(hd_arena *a,
                                                    const hd_attempt_row *r) {
  Handlers__V1__DeliveryAttempt *p = hd_arena_alloc(a, sizeof(*p));
  if (!p)
    return NULL;
  handlers__v1__delivery_attempt__init(p);
  p->number = r->number > 0 ? (uint32_t)r->number : 0;
  p->manual = r->manual != 0;
  p->started_at_ms = r->started_ms;
  p->duration_ms = r->duration_ms;
  p->http_status = r->http_status;
  p->error = dup_or_empty(a, r->error);
  if (!p->error)
    return NULL;
  if (r->response_head && r->response_head_len) {
    p->response_head.data = (uint8_t *)r->response_head;
    p->response_head.len = r->response_head_len;
  }
  return p;
}

/* "name: a\nname: b\n" -> {"name: a", "name: b"}, in `a`. */
static hd_err headers_to_pb(hd_arena *a, const char *text,
                            Handlers__V1__GetDeliveryReply *reply) {
  size_t n = 0;
  for (const char *p = text; p && *p; p++)
    n += *p == '\n';
  if (text && *text && text[strlen(text) - 1] != '\n')
    n++; /* a last line without its newline is still a header */
  if (!n)
    return HD_OK;
  reply->headers = hd_arena_calloc(a, n, sizeof(*reply->headers));
  if (!reply->headers)
    return HD_ENOMEM;
  for (const char *p = text; *p;) {
    const char *nl = strchr(p, '\n');
    size_t len = nl ? (size_t)(nl - p) : strlen(p);
    char *line = hd_arena_alloc(a, len + 1);
    if (!line)
      return HD_ENOMEM;
    memcpy(line, p, len);
    line[len] = '\0';
    if (len) /* an empty line is no header */
      reply->headers[reply->n_headers++] = line;
    p += len + (nl != NULL);
  }
  return HD_OK;
}

/* ---- ListDeliveries ------------------------------------------------------
 */

/* The page token is the decimal seq of the last delivery of the page
 * before: the next page starts below it (hd_delivery_filter.before_seq).
 * "" is the first page. -1 when `tok` is no such number. */
static int64_t parse_page_token(const char *tok) {
  if (!tok[0])
    return 0;
  size_t len = strlen(tok);
  if (len > 19 || strspn(tok, "0123456789") != len)
    return -1;
  errno = 0;
  char *end;
  long long v = strtoll(tok, &end, 10);
  if (errno || *end || v <= 0)
    return -1;
  return (int64_t)v;
}

typedef struct list_job {
  hd_delivery_filter f; /* limit: the page size plus one */
  size_t page_size;
} list_job;

static void run_list(call *c, void *arg) {
  list_job *job = arg;
  char msg[RPC_MSG_MAX] = "";
  Handlers__V1__ListDeliveriesReply reply =
      HANDLERS__V1__LIST_DELIVERIES_REPLY__INIT;
  hd_delivery_info *rows = NULL;
  size_t n = 0;
  hd_err err = hd_outbox_list(c->srv->cfg.outbox, &job->f, c->arena, &rows, &n,
                              msg, sizeof(msg));
  /* One row more than the page says whether another page follows,
   * without a second query or a token that leads to an empty page. */
  if (err == HD_OK && n > job->page_size) {
    n = job->page_size;
    char tok[24];
    snprintf(tok, sizeof(tok), "%" PRId64, rows[n - 1].row.seq);
    reply.next_page_token = hd_arena_strdup(c->arena, tok);
    if (!reply.next_page_token)
      err = HD_ENOMEM;
  }
  if (err == HD_OK && n) {
    reply.deliveries = hd_arena_calloc(c->arena, n, sizeof(*reply.deliveries));
    if (!reply.deliveries)
      err = HD_ENOMEM;
    for (size_t i = 0; err == HD_OK && i < n; i++)
      if (!(reply.deliveries[i] = delivery_to_pb(c->arena, &rows[i].row)))
        err = HD_ENOMEM;
    reply.n_deliveries = n;
  }
  call_answer(c, err, msg, &reply.base);
}

static void handle_list(call *c, grpc_slice body) {
  Handlers__V1__ListDeliveriesRequest *req =
      call_unpack(c, body, &handlers__v1__list_deliveries_request__descriptor);
  if (!req || !outbox_or_finish(c) || !state_ok(c, (int)req->state) ||
      !range_ok(c, req->since_ms, req->until_ms))
    return;
  if (req->page_size > PAGE_SIZE_MAX) {
    call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
                "page_size %" PRIu32 " is over %d", req->page_size,
                PAGE_SIZE_MAX);
    return;
  }
  int64_t before = parse_page_token(req->page_token);
  if (before < 0) {
    call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
                "page_token '%.40s' is not a next_page_token of "
                "ListDeliveries",
                req->page_token);
    return;
  }
  list_job *job = hd_arena_calloc(c->arena, 1, sizeof(*job));
  if (!job) {
    call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  job->page_size = req->page_size ? req->page_size : PAGE_SIZE_DEFAULT;
  job->f = (hd_delivery_filter){.key = req->key,
                                .handler_id = req->handler_id,
                                .state = (int)req->state,
                                .since_ms = req->since_ms,
                                .until_ms = req->until_ms,
                                .before_seq = before,
                                .limit = job->page_size + 1};
  rpc_admin_enqueue(c, run_list, job);
}

/* ---- GetDelivery, Redeliver ----------------------------------------------
 */

/* The delivery_id of a GetDelivery or Redeliver request, or NULL after
 * ending the call. */
static const char *id_or_finish(call *c, const char *id) {
  if (!outbox_or_finish(c))
    return NULL;
  if (!id[0]) {
    call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "delivery_id is empty");
    return NULL;
  }
  return id;
}

static void run_get(call *c, void *arg) {
  const char *id = arg;
  char msg[RPC_MSG_MAX] = "";
  hd_delivery_info info;
  memset(&info, 0, sizeof(info));
  hd_err err =
      hd_outbox_get(c->srv->cfg.outbox, id, c->arena, &info, msg, sizeof(msg));
  if (err == HD_ENOTFOUND) {
    finish_not_found(c, id);
    return;
  }
  Handlers__V1__GetDeliveryReply reply = HANDLERS__V1__GET_DELIVERY_REPLY__INIT;
  if (err == HD_OK && !(reply.delivery = delivery_to_pb(c->arena, &info.row)))
    err = HD_ENOMEM;
  if (err == HD_OK) {
    reply.body.data = (uint8_t *)info.row.body;
    reply.body.len = info.row.body ? info.row.body_len : 0;
    err = headers_to_pb(c->arena, info.row.headers, &reply);
  }
  if (err == HD_OK && info.n_attempts) {
    reply.attempts =
        hd_arena_calloc(c->arena, info.n_attempts, sizeof(*reply.attempts));
    if (!reply.attempts)
      err = HD_ENOMEM;
    for (size_t i = 0; err == HD_OK && i < info.n_attempts; i++)
      if (!(reply.attempts[i] = attempt_to_pb(c->arena, &info.attempts[i])))
        err = HD_ENOMEM;
    reply.n_attempts = info.n_attempts;
  }
  call_answer(c, err, msg, &reply.base);
}

static void handle_get(call *c, grpc_slice body) {
  Handlers__V1__GetDeliveryRequest *req =
      call_unpack(c, body, &handlers__v1__get_delivery_request__descriptor);
  if (req && id_or_finish(c, req->delivery_id))
    rpc_admin_enqueue(c, run_get, req->delivery_id);
}

static void run_redeliver(call *c, void *arg) {
  const char *id = arg;
  char msg[RPC_MSG_MAX] = "";
  hd_err err = hd_outbox_redeliver(c->srv->cfg.outbox, id, msg, sizeof(msg));
  if (err == HD_ENOTFOUND) {
    finish_not_found(c, id);
    return;
  }
  if (err == HD_EINVAL) {
    /* The request is fine; the delivery's webhook is what is gone (its
     * handler was removed): a state of the system, not a bad argument. */
    call_finish(c, GRPC_STATUS_FAILED_PRECONDITION, "%s",
                msg[0] ? msg
                       : "the delivery's webhook is no longer registered");
    return;
  }
  if (err == HD_OK)
    hd_log(HD_LOG_INFO, "redelivering delivery %s", id);
  Handlers__V1__RedeliverReply reply = HANDLERS__V1__REDELIVER_REPLY__INIT;
  call_answer(c, err, msg, &reply.base);
}

static void handle_redeliver(call *c, grpc_slice body) {
  Handlers__V1__RedeliverRequest *req =
      call_unpack(c, body, &handlers__v1__redeliver_request__descriptor);
  if (req && id_or_finish(c, req->delivery_id))
    rpc_admin_enqueue(c, run_redeliver, req->delivery_id);
}

/* ---- Replay ----------------------------------------------------------------
 */

static void run_replay(call *c, void *arg) {
  Handlers__V1__ReplayRequest *req = arg;
  char msg[RPC_MSG_MAX] = "";
  size_t replayed = 0;
  int truncated = 0;
  size_t limit = req->limit ? req->limit : REPLAY_LIMIT_DEFAULT;
  hd_err err = hd_outbox_replay(c->srv->cfg.outbox, req->handler_id,
                                req->since_ms, req->until_ms, (int)req->state,
                                limit, &replayed, &truncated, msg, sizeof(msg));
  Handlers__V1__ReplayReply reply = HANDLERS__V1__REPLAY_REPLY__INIT;
  if (err == HD_OK) {
    hd_log(HD_LOG_INFO, "replaying %zu deliveries of handler %s%s", replayed,
           req->handler_id, truncated ? " (more matched)" : "");
    reply.replayed = (uint32_t)replayed;
    reply.truncated = truncated != 0;
  }
  call_answer(c, err, msg, &reply.base);
}

static void handle_replay(call *c, grpc_slice body) {
  Handlers__V1__ReplayRequest *req =
      call_unpack(c, body, &handlers__v1__replay_request__descriptor);
  if (!req || !outbox_or_finish(c))
    return;
  /* Both bound the work: without them a Replay would resend a handler's
   * whole history, or every handler's. */
  if (!req->handler_id[0] || !req->since_ms) {
    call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
                "%s is required (Replay resends a handler's deliveries "
                "created since a time)",
                req->handler_id[0] ? "since_ms" : "handler_id");
    return;
  }
  if (!state_ok(c, (int)req->state) ||
      !range_ok(c, req->since_ms, req->until_ms))
    return;
  if (req->limit > REPLAY_LIMIT_MAX) {
    call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "limit %" PRIu32 " is over %d",
                req->limit, REPLAY_LIMIT_MAX);
    return;
  }
  rpc_admin_enqueue(c, run_replay, req);
}

/* ---- EnableWebhook ---------------------------------------------------------
 */

typedef struct find_ctx {
  const char *id;
  int found;
} find_ctx;

static void find_one(const char *key, hd_handler *member, void *ud) {
  find_ctx *fc = ud;
  (void)key;
  if (strcmp(hd_handler_id(member), fc->id) == 0)
    fc->found = 1;
}

static void run_enable(call *c, void *arg) {
  Handlers__V1__EnableWebhookRequest *req = arg;
  char msg[RPC_MSG_MAX] = "";
  /* The registry is the index of what is registered (one key's members, no
   * store read); on the control thread no registration changes meanwhile. */
  find_ctx fc = {req->handler_id, 0};
  hd_err err = hd_registry_foreach(c->srv->reg, req->key, find_one, &fc);
  if (err == HD_ENOKEY) {
    call_finish(c, GRPC_STATUS_NOT_FOUND, "no handler registered for key '%s'",
                req->key);
    return;
  }
  if (err == HD_OK && !fc.found) {
    call_finish(c, GRPC_STATUS_NOT_FOUND, "no handler '%s' under key '%s'",
                req->handler_id, req->key);
    return;
  }
  size_t enabled = 0;
  if (err == HD_OK)
    err = hd_outbox_enable(c->srv->cfg.outbox, req->handler_id, &enabled, msg,
                           sizeof(msg));
  Handlers__V1__EnableWebhookReply reply =
      HANDLERS__V1__ENABLE_WEBHOOK_REPLY__INIT;
  if (err == HD_OK) {
    if (enabled)
      hd_log(HD_LOG_INFO, "enabled %zu webhooks of handler %s under key '%s'",
             enabled, req->handler_id, req->key);
    reply.enabled = (uint32_t)enabled;
  }
  call_answer(c, err, msg, &reply.base);
}

static void handle_enable(call *c, grpc_slice body) {
  Handlers__V1__EnableWebhookRequest *req =
      call_unpack(c, body, &handlers__v1__enable_webhook_request__descriptor);
  if (!req || !outbox_or_finish(c))
    return;
  if (!req->key[0] || !req->handler_id[0]) {
    call_finish(c, GRPC_STATUS_INVALID_ARGUMENT, "%s is empty",
                req->key[0] ? "handler_id" : "key");
    return;
  }
  rpc_admin_enqueue(c, run_enable, req);
}

const rpc_method rpc_delivery_methods[] = {
    {.path = "/handlers.v1.Handlers/ListDeliveries",
     .auth = RPC_AUTH_CONTROL,
     .handle = handle_list},
    {.path = "/handlers.v1.Handlers/GetDelivery",
     .auth = RPC_AUTH_CONTROL,
     .handle = handle_get},
    {.path = "/handlers.v1.Handlers/Redeliver",
     .auth = RPC_AUTH_CONTROL,
     .handle = handle_redeliver},
    {.path = "/handlers.v1.Handlers/Replay",
     .auth = RPC_AUTH_CONTROL,
     .handle = handle_replay},
    {.path = "/handlers.v1.Handlers/EnableWebhook",
     .auth = RPC_AUTH_CONTROL,
     .handle = handle_enable},
    {.path = NULL},
};
