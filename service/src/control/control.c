#include "control.h"

#include "utf8.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How a registered handler was made: what ListHandlers shows. */
typedef struct record {
  char id[HD_HANDLER_ID_MAX + 1];
  char *key;
  int kind; /* HANDLERS__V1__HANDLER_KIND__* */
  char *target;
  size_t n_routes;
  char **route_events, **route_targets;
  size_t n_events;
  char **events;
  int secret_set;
} record;

struct hd_control {
  hd_registry *reg;
  hd_functions *fns;
  hd_store *store;
  hd_webhook_factory_fn *webhook_factory;
  void *webhook_ud;
  hd_control_limits limits;
  pthread_mutex_t lock;
  record **recs; /* sorted by id */
  size_t n_recs, cap_recs;
};

static void record_free(record *r) {
  if (!r)
    return;
  free(r->key);
  free(r->target);
  for (size_t i = 0; i < r->n_routes; i++) {
    free(r->route_events[i]);
    free(r->route_targets[i]);
  }
  free(r->route_events);
  free(r->route_targets);
  for (size_t i = 0; i < r->n_events; i++)
    free(r->events[i]);
  free(r->events);
  free(r);
}

hd_err hd_control_new(hd_registry *reg, hd_functions *fns, hd_control **out) {
  hd_control *c = calloc(1, sizeof(*c));
  if (!c)
    return HD_ENOMEM;
  c->reg = reg;
  c->fns = fns;
  hd_control_limits_init(&c->limits);
  pthread_mutex_init(&c->lock, NULL);
  *out = c;
  return HD_OK;
}

void hd_control_limits_init(hd_control_limits *l) {
  l->max_events = 256;
  l->max_routes = 256;
  l->max_headers = 64;
}

void hd_control_set_limits(hd_control *c, const hd_control_limits *l) {
  c->limits = *l;
}

void hd_control_free(hd_control *c) {
  if (!c)
    return;
  for (size_t i = 0; i < c->n_recs; i++)
    record_free(c->recs[i]);
  free(c->recs);
  pthread_mutex_destroy(&c->lock);
  free(c);
}

size_t hd_control_count(hd_control *c) {
  pthread_mutex_lock(&c->lock);
  size_t n = c->n_recs;
  pthread_mutex_unlock(&c->lock);
  return n;
}

void hd_control_set_store(hd_control *c, hd_store *store) {
  c->store = store;
}

void hd_control_set_webhook_factory(hd_control *c, hd_webhook_factory_fn *fn,
                                    void *ud) {
  c->webhook_factory = fn;
  c->webhook_ud = ud;
}

/* Index of `id` in the sorted records, or where it would go. */
static size_t find_rec(hd_control *c, const char *id, int *found) {
  size_t lo = 0, hi = c->n_recs;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int cmp = strcmp(c->recs[mid]->id, id);
    if (cmp == 0) {
      *found = 1;
      return mid;
    }
    if (cmp < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  *found = 0;
  return lo;
}

static hd_err insert_rec(hd_control *c, record *r) {
  int found;
  pthread_mutex_lock(&c->lock);
  size_t at = find_rec(c, r->id, &found);
  if (c->n_recs == c->cap_recs) {
    size_t cap = c->cap_recs ? c->cap_recs * 2 : 16;
    record **n = realloc(c->recs, cap * sizeof(*n));
    if (!n) {
      pthread_mutex_unlock(&c->lock);
      return HD_ENOMEM;
    }
    c->recs = n;
    c->cap_recs = cap;
  }
  memmove(&c->recs[at + 1], &c->recs[at], (c->n_recs - at) * sizeof(*c->recs));
  c->recs[at] = r;
  c->n_recs++;
  pthread_mutex_unlock(&c->lock);
  return HD_OK;
}

static int has_rec(hd_control *c, const char *id) {
  int found;
  pthread_mutex_lock(&c->lock);
  find_rec(c, id, &found);
  pthread_mutex_unlock(&c->lock);
  return found;
}

static void drop_rec(hd_control *c, const char *id) {
  int found;
  pthread_mutex_lock(&c->lock);
  size_t at = find_rec(c, id, &found);
  if (found) {
    record_free(c->recs[at]);
    memmove(&c->recs[at], &c->recs[at + 1],
            (c->n_recs - at - 1) * sizeof(*c->recs));
    c->n_recs--;
  }
  pthread_mutex_unlock(&c->lock);
}

static char *describe(const Handlers__V1__Target *t) {
  char *s = NULL;
  if (t->kind_case == HANDLERS__V1__TARGET__KIND_LOCAL) {
    if (asprintf(&s, "local:%s", t->local) < 0)
      return NULL;
  } else if (t->kind_case == HANDLERS__V1__TARGET__KIND_WEBHOOK) {
    if (asprintf(&s, "webhook:%s", t->webhook->url) < 0)
      return NULL;
  }
  return s;
}

/* Builds the handler for one target. `what` names it in messages. */
static hd_err make_target(hd_control *c, const char *key,
                          const Handlers__V1__Target *t, const char *what,
                          hd_handler **out, char **secret, int *secret_set,
                          char *msg, size_t msg_size) {
  switch (t ? t->kind_case : HANDLERS__V1__TARGET__KIND__NOT_SET) {
  case HANDLERS__V1__TARGET__KIND_LOCAL: {
    hd_err err = hd_functions_make_handler(c->fns, t->local, out);
    if (err == HD_ENOTFOUND) {
      snprintf(msg, msg_size, "%s: no local function named '%s'", what,
               t->local);
      return HD_EINVAL;
    }
    return err;
  }
  case HANDLERS__V1__TARGET__KIND_WEBHOOK:
    if (!c->webhook_factory) {
      snprintf(msg, msg_size, "%s: webhook targets are not supported", what);
      return HD_EUNSUPPORTED;
    }
    if (t->webhook->new_secret && *secret) {
      snprintf(msg, msg_size,
               "%s: new_secret may be asked for one webhook "
               "per request",
               what);
      return HD_EINVAL;
    }
    *secret_set = t->webhook->new_secret || t->webhook->secret[0] != '\0';
    return c->webhook_factory(c->webhook_ud, key, t->webhook, out, secret, msg,
                              msg_size);
  default:
    snprintf(msg, msg_size, "%s: target has neither local nor webhook set",
             what);
    return HD_EINVAL;
  }
}

/* ---- checks on a new registration ----------------------------------------
 *
 * In this order, each before any work for the next: the sizes
 * (hd_control_limits: counts only, O(1) per webhook), then every string
 * (UTF-8), then the shape of the request (check_request). All are
 * HD_EINVAL: a request over a limit is refused as a bad argument, like an
 * over-long topic path (--max-topic-path-bytes), because sending it again
 * can never succeed; RESOURCE_EXHAUSTED is kept for what the server runs
 * out of (--max-keys, --max-handlers-per-key, a full store) and may have
 * again later. Registrations replayed from the store (a forced id) skip the
 * limits and the UTF-8 check: they were acknowledged under the options and
 * the version they were made with, and must still load. */

static hd_err check_headers_limit(const hd_control_limits *l,
                                  const Handlers__V1__Target *t,
                                  const char *what, char *msg,
                                  size_t msg_size) {
  if (!t || t->kind_case != HANDLERS__V1__TARGET__KIND_WEBHOOK ||
      t->webhook->n_headers <= (size_t)l->max_headers)
    return HD_OK;
  snprintf(msg, msg_size,
           "%s.webhook.headers: %zu headers, the limit is %d "
           "(--max-webhook-headers)",
           what, t->webhook->n_headers, l->max_headers);
  return HD_EINVAL;
}

static hd_err check_limits(const hd_control_limits *l,
                           const Handlers__V1__AddHandlerRequest *req,
                           char *msg, size_t msg_size) {
  if (req->n_events > (size_t)l->max_events) {
    snprintf(msg, msg_size,
             "%zu event names, the limit is %d (--max-events-per-handler)",
             req->n_events, l->max_events);
    return HD_EINVAL;
  }
  if (req->n_routes > (size_t)l->max_routes) {
    snprintf(msg, msg_size,
             "%zu routes, the limit is %d (--max-routes-per-handler)",
             req->n_routes, l->max_routes);
    return HD_EINVAL;
  }
  hd_err err = check_headers_limit(l, req->target, "target", msg, msg_size);
  for (size_t i = 0; err == HD_OK && i < req->n_routes; i++) {
    char what[48];
    snprintf(what, sizeof(what), "routes[%zu].value", i);
    err = check_headers_limit(l, req->routes[i]->value, what, msg, msg_size);
  }
  return err;
}

/* Proto3 strings must be UTF-8, and clients in other languages fail to read
 * back a listing that is not; protobuf-c does not check. HD_EINVAL naming
 * the field "<what><field>" when `s` is not. (A NUL inside a string cannot
 * be seen here: protobuf-c already cut the string there.
 * hd_proto_check_strings, on the encoded request, catches that.) */
static hd_err check_utf8(const char *what, const char *field, const char *s,
                         char *msg, size_t msg_size) {
  size_t len = strlen(s);
  size_t bad = hd_utf8_valid_prefix(s, len);
  if (bad == len)
    return HD_OK;
  snprintf(msg, msg_size, "%s%s is not valid UTF-8 (at byte %zu)", what, field,
           bad);
  return HD_EINVAL;
}

/* The strings of one target; `what` names it ("target",
 * "routes[2].value"). */
static hd_err check_target_utf8(const Handlers__V1__Target *t, const char *what,
                                char *msg, size_t msg_size) {
  if (!t)
    return HD_OK;
  if (t->kind_case == HANDLERS__V1__TARGET__KIND_LOCAL)
    return check_utf8(what, ".local", t->local, msg, msg_size);
  if (t->kind_case != HANDLERS__V1__TARGET__KIND_WEBHOOK)
    return HD_OK;
  const Handlers__V1__Webhook *wh = t->webhook;
  hd_err err = check_utf8(what, ".webhook.url", wh->url, msg, msg_size);
  if (err == HD_OK)
    err = check_utf8(what, ".webhook.secret", wh->secret, msg, msg_size);
  for (size_t h = 0; err == HD_OK && h < wh->n_headers; h++) {
    char field[64];
    snprintf(field, sizeof(field), ".webhook.headers[%zu].key", h);
    err = check_utf8(what, field, wh->headers[h]->key, msg, msg_size);
    if (err == HD_OK) {
      snprintf(field, sizeof(field), ".webhook.headers[%zu].value", h);
      err = check_utf8(what, field, wh->headers[h]->value, msg, msg_size);
    }
  }
  return err;
}

/* Every string of the request, named by its path in the message (repeated
 * fields and map entries by their index in the request). */
static hd_err check_strings(const Handlers__V1__AddHandlerRequest *req,
                            char *msg, size_t msg_size) {
  char what[48];
  hd_err err = check_utf8("", "key", req->key, msg, msg_size);
  if (err == HD_OK)
    err = check_target_utf8(req->target, "target", msg, msg_size);
  for (size_t i = 0; err == HD_OK && i < req->n_events; i++) {
    if (hd_utf8_valid(req->events[i], strlen(req->events[i])))
      continue; /* the name is formatted only for a bad one */
    snprintf(what, sizeof(what), "events[%zu]", i);
    err = check_utf8(what, "", req->events[i], msg, msg_size);
  }
  for (size_t i = 0; err == HD_OK && i < req->n_routes; i++) {
    snprintf(what, sizeof(what), "routes[%zu]", i);
    err = check_utf8(what, ".key", req->routes[i]->key, msg, msg_size);
    if (err == HD_OK) {
      snprintf(what, sizeof(what), "routes[%zu].value", i);
      err = check_target_utf8(req->routes[i]->value, what, msg, msg_size);
    }
  }
  return err;
}

static hd_err check_request(const Handlers__V1__AddHandlerRequest *req,
                            char *msg, size_t msg_size) {
  size_t klen = strlen(req->key);
  if (klen == 0) {
    snprintf(msg, msg_size, "key is empty");
    return HD_EINVAL;
  }
  if (klen > HD_KEY_MAX) {
    snprintf(msg, msg_size, "key is %zu bytes, the limit is %d", klen,
             HD_KEY_MAX);
    return HD_EINVAL;
  }
  if (!req->target == !req->n_routes) {
    snprintf(msg, msg_size,
             req->target ? "give either target or routes, not both"
                         : "give a target or routes");
    return HD_EINVAL;
  }
  if (req->n_routes && req->n_events) {
    snprintf(msg, msg_size,
             "events filters a simple handler; routes already "
             "name their events");
    return HD_EINVAL;
  }
  for (size_t i = 0; i < req->n_routes; i++) {
    size_t n = strlen(req->routes[i]->key);
    if (n == 0 || n > HD_EVENT_NAME_MAX) {
      snprintf(msg, msg_size, "route event name must be 1 to %d bytes",
               HD_EVENT_NAME_MAX);
      return HD_EINVAL;
    }
  }
  for (size_t i = 0; i < req->n_events; i++) {
    size_t n = strlen(req->events[i]);
    if (n == 0 || n > HD_EVENT_NAME_MAX) {
      snprintf(msg, msg_size, "events[%zu] must be 1 to %d bytes", i,
               HD_EVENT_NAME_MAX);
      return HD_EINVAL;
    }
  }
  return HD_OK;
}

/* A new event-stream handler, with the forced `id` when one is given. */
static hd_err new_stream(const char *id, hd_handler **out) {
  hd_err err = hd_stream_new(out);
  if (err == HD_OK && id && (err = hd_handler_set_id(*out, id)) != HD_OK) {
    hd_handler_unref(*out);
    *out = NULL;
  }
  return err;
}

/* An event name and where it is in the request. */
typedef struct named {
  const char *name;
  size_t i;
} named;

/* By name, then by place in the request. */
static int named_cmp(const void *a, const void *b) {
  const named *x = a, *y = b;
  int c = strcmp(x->name, y->name);
  return c ? c : (x->i > y->i) - (x->i < y->i);
}

/* Routes `n` event names to `subs[order[k].i]` (or to `one` when `subs` is
 * NULL), sorted by name first: the stream keeps its routes in a sorted
 * array, so each route then goes at its end and n routes cost O(n log n)
 * instead of the O(n^2) of memmoves that request order can cost (300 000
 * names in reverse order took seconds). A name given twice: the later one in
 * the request wins, as it did in request order. */
static hd_err route_sorted(hd_handler *h, named *order, size_t n,
                           hd_handler *const *subs, hd_handler *one) {
  hd_err err = HD_OK;
  qsort(order, n, sizeof(*order), named_cmp);
  for (size_t k = 0; err == HD_OK && k < n; k++) {
    /* The same sub-handler for a repeated name: once is enough. */
    if (!subs && k + 1 < n && strcmp(order[k].name, order[k + 1].name) == 0)
      continue;
    err = hd_stream_route(h, order[k].name, subs ? subs[order[k].i] : one);
  }
  return err;
}

/* A simple handler, or an event-stream for a filtered or routed one, with
 * id `id` (NULL: a fresh one). The sub-handlers carry the same id so results
 * name what the caller registered. Targets are made in request order (the
 * first bad one is the one reported), routes added in name order
 * (route_sorted). */
static hd_err build(hd_control *c, const Handlers__V1__AddHandlerRequest *req,
                    const char *id, record *rec, hd_handler **out,
                    char **secret, char *msg, size_t msg_size) {
  hd_err err;
  hd_handler *h = NULL;
  size_t n = req->target ? req->n_events : req->n_routes;
  named *order = NULL;
  hd_handler **subs = NULL;
  if (req->target) {
    hd_handler *simple = NULL;
    err = make_target(c, req->key, req->target, "target", &simple, secret,
                      &rec->secret_set, msg, msg_size);
    if (err != HD_OK)
      return err;
    if (req->n_events == 0) {
      if (id && (err = hd_handler_set_id(simple, id)) != HD_OK) {
        hd_handler_unref(simple);
        return err;
      }
      *out = simple;
      return HD_OK;
    }
    if ((err = new_stream(id, &h)) == HD_OK)
      err = hd_handler_set_id(simple, hd_handler_id(h));
    if (err == HD_OK && !(order = malloc(n * sizeof(*order))))
      err = HD_ENOMEM;
    for (size_t i = 0; err == HD_OK && i < n; i++)
      order[i] = (named){req->events[i], i};
    if (err == HD_OK)
      err = route_sorted(h, order, n, NULL, simple);
    hd_handler_unref(simple);
  } else {
    err = new_stream(id, &h);
    if (err == HD_OK && (!(order = malloc(n * sizeof(*order))) ||
                         !(subs = calloc(n, sizeof(*subs)))))
      err = HD_ENOMEM;
    for (size_t i = 0; err == HD_OK && i < n; i++) {
      char what[HD_EVENT_NAME_MAX + 16];
      snprintf(what, sizeof(what), "route '%s'", req->routes[i]->key);
      err = make_target(c, req->key, req->routes[i]->value, what, &subs[i],
                        secret, &rec->secret_set, msg, msg_size);
      if (err == HD_OK)
        err = hd_handler_set_id(subs[i], hd_handler_id(h));
      order[i] = (named){req->routes[i]->key, i};
    }
    if (err == HD_OK)
      err = route_sorted(h, order, n, subs, NULL);
    for (size_t i = 0; subs && i < n; i++)
      hd_handler_unref(subs[i]);
  }
  free(order);
  free(subs);
  if (err != HD_OK) {
    hd_handler_unref(h);
    return err;
  }
  *out = h;
  return HD_OK;
}

static hd_err fill_record(record *rec,
                          const Handlers__V1__AddHandlerRequest *req) {
  rec->key = strdup(req->key);
  if (!rec->key)
    return HD_ENOMEM;
  if (req->target) {
    rec->kind = HANDLERS__V1__HANDLER_KIND__SIMPLE;
    if (!(rec->target = describe(req->target)))
      return HD_ENOMEM;
    if (req->n_events) {
      rec->events = calloc(req->n_events, sizeof(char *));
      if (!rec->events)
        return HD_ENOMEM;
      for (; rec->n_events < req->n_events; rec->n_events++)
        if (!(rec->events[rec->n_events] = strdup(req->events[rec->n_events])))
          return HD_ENOMEM;
    }
    return HD_OK;
  }
  rec->kind = HANDLERS__V1__HANDLER_KIND__EVENT_STREAM;
  rec->route_events = calloc(req->n_routes, sizeof(char *));
  rec->route_targets = calloc(req->n_routes, sizeof(char *));
  if (!rec->route_events || !rec->route_targets)
    return HD_ENOMEM;
  for (; rec->n_routes < req->n_routes; rec->n_routes++) {
    size_t i = rec->n_routes;
    rec->route_events[i] = strdup(req->routes[i]->key);
    rec->route_targets[i] = describe(req->routes[i]->value);
    if (!rec->route_events[i] || !rec->route_targets[i]) {
      rec->n_routes++;
      return HD_ENOMEM;
    }
  }
  return HD_OK;
}

/* The request as it must be replayed: a generated secret replaces the
 * new_secret flag, so a restart keeps signing with the same secret. */
static hd_err pack_for_store(const Handlers__V1__AddHandlerRequest *req,
                             char *secret, uint8_t **out, size_t *len) {
  Handlers__V1__AddHandlerRequest copy = *req;
  Handlers__V1__Target target;
  Handlers__V1__Webhook webhook;
  Handlers__V1__AddHandlerRequest__RoutesEntry **routes = NULL;
  Handlers__V1__AddHandlerRequest__RoutesEntry entry;
  const Handlers__V1__Target *t = NULL;
  if (req->target)
    t = req->target;
  for (size_t i = 0; !t && i < req->n_routes; i++)
    if (req->routes[i]->value &&
        req->routes[i]->value->kind_case ==
            HANDLERS__V1__TARGET__KIND_WEBHOOK &&
        req->routes[i]->value->webhook->new_secret) {
      routes = malloc(req->n_routes * sizeof(*routes));
      if (!routes)
        return HD_ENOMEM;
      memcpy(routes, req->routes, req->n_routes * sizeof(*routes));
      entry = *req->routes[i];
      routes[i] = &entry;
      copy.routes = routes;
      t = req->routes[i]->value;
    }
  if (secret && t && t->kind_case == HANDLERS__V1__TARGET__KIND_WEBHOOK &&
      t->webhook->new_secret) {
    target = *t;
    webhook = *t->webhook;
    webhook.secret = secret;
    webhook.new_secret = 0;
    target.webhook = &webhook;
    if (routes) {
      for (size_t i = 0; i < req->n_routes; i++)
        if (routes[i] == &entry)
          entry.value = &target;
    } else {
      copy.target = &target;
    }
  }
  *len = protobuf_c_message_get_packed_size(&copy.base);
  *out = malloc(*len ? *len : 1);
  if (*out)
    protobuf_c_message_pack(&copy.base, *out);
  free(routes);
  return *out ? HD_OK : HD_ENOMEM;
}

/* What a store failure answers: HD_EBUSY (no room: RESOURCE_EXHAUSTED) and
 * HD_ENOMEM as they are, anything else HD_EIO (UNAVAILABLE). Never a code
 * that would blame the request or say the handler does not exist. */
static hd_err store_code(hd_err err) {
  return err == HD_EBUSY || err == HD_ENOMEM ? err : HD_EIO;
}

static hd_err persist(hd_control *c, const Handlers__V1__AddHandlerRequest *req,
                      const char *id, char *secret, char *msg,
                      size_t msg_size) {
  if (!c->store)
    return HD_OK;
  uint8_t *bytes = NULL;
  size_t len = 0;
  char why[512] = "";
  hd_err err = pack_for_store(req, secret, &bytes, &len);
  if (err == HD_OK) {
    /* Never acknowledge what a restart could not read back: protobuf-c
     * keeps unknown fields it accepted (even an overlong tag 0) and writes
     * them out in a form its own decoder refuses. (Found by fuzz_control.) */
    Handlers__V1__AddHandlerRequest *back =
        handlers__v1__add_handler_request__unpack(NULL, len, bytes);
    if (back == NULL) {
      if (bytes) {
        memset(bytes, 0, len);
        free(bytes);
      }
      snprintf(msg, msg_size,
               "the request does not survive re-encoding (a malformed "
               "unknown field?): not registered");
      return HD_EINVAL;
    }
    handlers__v1__add_handler_request__free_unpacked(back, NULL);
    err = hd_store_put(c->store, id, req->key, bytes, len, why, sizeof(why));
  }
  if (bytes) {
    memset(bytes, 0, len); /* may hold a secret */
    free(bytes);
  }
  if (err != HD_OK) {
    snprintf(msg, msg_size, "cannot save the registration: %s",
             why[0] ? why : hd_strerror(err));
    hd_log(HD_LOG_ERROR, "store: cannot save handler %s under key '%s': %s", id,
           req->key, why[0] ? why : hd_strerror(err));
    return store_code(err);
  }
  return HD_OK;
}

/* Says which registry limit an HD_EBUSY add ran into. */
static void limit_message(hd_registry *reg, const char *key, char *msg,
                          size_t msg_size) {
  size_t max_keys, max_per_key;
  hd_handler *set = NULL;

  hd_registry_limits(reg, &max_keys, &max_per_key);
  if (hd_registry_get(reg, key, &set) == HD_OK) {
    snprintf(msg, msg_size,
             "key '%s' already has %zu handlers, the limit "
             "(--max-handlers-per-key)",
             key, max_per_key);
    hd_handler_unref(set);
  } else {
    snprintf(msg, msg_size,
             "%zu keys are registered, the limit (--max-keys): remove one "
             "first",
             max_keys);
  }
}

static hd_err add(hd_control *c, hd_arena *a,
                  const Handlers__V1__AddHandlerRequest *req, const char *id,
                  int save, Handlers__V1__AddHandlerReply *reply, char *msg,
                  size_t msg_size) {
  hd_err err = HD_OK;
  if (!id) {
    err = check_limits(&c->limits, req, msg, msg_size);
    if (err == HD_OK)
      err = check_strings(req, msg, msg_size);
  } else if (check_strings(req, msg, msg_size) != HD_OK) {
    /* Saved before handlerd refused such strings: restored all the same
     * (it was acknowledged), listed with U+FFFD for the bad bytes. */
    hd_log(HD_LOG_WARN,
           "handler %s under key '%s': %s; restored as it was saved (it "
           "could not be registered today): ListHandlers shows U+FFFD for "
           "the bad bytes",
           id, req->key, msg);
    if (msg_size)
      msg[0] = '\0';
  }
  if (err == HD_OK)
    err = check_request(req, msg, msg_size);
  if (err != HD_OK)
    return err;
  record *rec = calloc(1, sizeof(*rec));
  if (!rec)
    return HD_ENOMEM;
  hd_handler *h = NULL;
  char *secret = NULL;
  int saved = 0;
  err = build(c, req, id, rec, &h, &secret, msg, msg_size);
  if (err == HD_OK)
    err = fill_record(rec, req);
  /* An id already in use (a forced id, or a random one colliding) must be
   * refused before the store's row for it is overwritten. */
  if (err == HD_OK && has_rec(c, hd_handler_id(h))) {
    snprintf(msg, msg_size, "handler '%s' is already registered",
             hd_handler_id(h));
    err = HD_EEXIST;
  }
  /* The reply is ready before anything is committed: once saved and
   * registered, nothing may fail and leave the caller without its id. */
  if (err == HD_OK && reply) {
    reply->handler_id = hd_arena_strdup(a, hd_handler_id(h));
    reply->secret = hd_arena_strdup(a, secret ? secret : "");
    if (!reply->handler_id || !reply->secret)
      err = HD_ENOMEM;
  }
  if (err == HD_OK && save) {
    err = persist(c, req, hd_handler_id(h), secret, msg, msg_size);
    saved = err == HD_OK;
  }
  if (err == HD_OK) {
    snprintf(rec->id, sizeof(rec->id), "%s", hd_handler_id(h));
    err = insert_rec(c, rec);
    if (err == HD_OK) {
      err = hd_registry_add(c->reg, req->key, h);
      if (err != HD_OK) {
        drop_rec(c, rec->id); /* frees rec */
        if (err == HD_EEXIST)
          snprintf(msg, msg_size, "handler '%s' is already registered",
                   hd_handler_id(h));
        else if (err == HD_EBUSY)
          limit_message(c->reg, req->key, msg, msg_size);
      }
      rec = NULL;
    }
  }
  if (err == HD_ENOMEM)
    snprintf(msg, msg_size, "out of memory");
  if (err != HD_OK && saved) {
    /* Refused after all: forget the saved row, or it would come back at the
     * next start. */
    char why[512] = "";
    hd_err derr = hd_store_del(c->store, hd_handler_id(h), why, sizeof(why));
    if (derr != HD_OK && derr != HD_ENOTFOUND)
      hd_log(HD_LOG_ERROR,
             "store: handler %s under key '%s' was refused but stays saved "
             "(it will be restored at the next start): %s",
             hd_handler_id(h), req->key, why[0] ? why : hd_strerror(derr));
  }
  record_free(rec);
  if (secret) {
    /* A generated secret is shown once: wipe our copy. */
    memset(secret, 0, strlen(secret));
    free(secret);
  }
  hd_handler_unref(h);
  return err;
}

hd_err hd_control_add(hd_control *c, hd_arena *a,
                      const Handlers__V1__AddHandlerRequest *req,
                      const char *id, Handlers__V1__AddHandlerReply *reply,
                      char *msg, size_t msg_size) {
  return add(c, a, req, id, 1, reply, msg, msg_size);
}

typedef struct load_ctx {
  hd_control *c;
  size_t loaded;
  char *msg; /* hd_control_load's */
  size_t msg_size;
} load_ctx;

/* Restores one saved registration. One that cannot be restored stops the
 * load (with a message naming it and why), except for a registry limit:
 * that one is logged and skipped, and stays in the store. */
static hd_err load_one(const char *id, const char *key, const void *bytes,
                       size_t len, void *ud) {
  load_ctx *lc = ud;
  char msg[512] = "";
  hd_arena *a = hd_arena_new(4096);
  if (!a) {
    snprintf(lc->msg, lc->msg_size, "out of memory restoring handler %s", id);
    return HD_ENOMEM;
  }
  Handlers__V1__AddHandlerRequest *req =
      handlers__v1__add_handler_request__unpack(hd_arena_pb_allocator(a), len,
                                                bytes);
  hd_err err =
      req ? add(lc->c, a, req, id, 0, NULL, msg, sizeof(msg)) : HD_EINVAL;
  if (err == HD_OK) {
    lc->loaded++;
  } else if (!req) {
    snprintf(lc->msg, lc->msg_size,
             "cannot restore handler %s under key '%s': its saved request "
             "(%zu bytes) is not a valid AddHandlerRequest",
             id, key, len);
  } else if (err == HD_EBUSY) {
    hd_log(HD_LOG_ERROR,
           "store: handler %s under key '%s' is not restored: %s; it stays "
           "saved",
           id, key, msg[0] ? msg : hd_strerror(err));
    err = HD_OK;
  } else {
    snprintf(lc->msg, lc->msg_size,
             "cannot restore handler %s under key '%s': %s (it stays saved: "
             "start with the plugins and options it was registered under)",
             id, key, msg[0] ? msg : hd_strerror(err));
  }
  hd_arena_wipe(a); /* the request may carry a webhook secret */
  hd_arena_free(a);
  return err;
}

hd_err hd_control_load(hd_control *c, size_t *loaded, char *msg,
                       size_t msg_size) {
  char why[512] = "";
  load_ctx lc = {c, 0, why, sizeof(why)};
  char store_msg[512] = "";
  *loaded = 0;
  if (!c->store)
    return HD_OK;
  hd_err err =
      hd_store_load(c->store, load_one, &lc, store_msg, sizeof(store_msg));
  if (err != HD_OK && why[0])
    snprintf(msg, msg_size, "%s", why);
  else if (err != HD_OK)
    snprintf(msg, msg_size, "cannot load registrations: %s",
             store_msg[0] ? store_msg : hd_strerror(err));
  *loaded = lc.loaded;
  return err;
}

/* HD_OK when `id` is registered under `key`, else which of the two is
 * missing. */
static hd_err lookup(hd_control *c, const char *key, const char *id) {
  int found;
  pthread_mutex_lock(&c->lock);
  size_t at = find_rec(c, id, &found);
  int same_key = found && strcmp(c->recs[at]->key, key) == 0;
  pthread_mutex_unlock(&c->lock);
  if (same_key)
    return HD_OK;
  hd_handler *set = NULL;
  if (hd_registry_get(c->reg, key, &set) != HD_OK)
    return HD_ENOKEY;
  hd_handler_unref(set);
  return HD_ENOTFOUND;
}

/* A key or handler id that names nothing and is not UTF-8 is a bad
 * argument, not a missing handler. Checked once nothing matched, so a
 * handler saved before handlerd refused such keys can still be removed. */
static hd_err check_lookup_utf8(const char *key, const char *id, char *msg,
                                size_t msg_size) {
  hd_err err = check_utf8("", "key", key, msg, msg_size);
  if (err == HD_OK && id)
    err = check_utf8("", "handler_id", id, msg, msg_size);
  return err;
}

hd_err hd_control_remove(hd_control *c, const char *key, const char *id,
                         char *msg, size_t msg_size) {
  hd_err err = lookup(c, key, id);
  char why[512] = "";
  if (err != HD_OK && check_lookup_utf8(key, id, msg, msg_size) != HD_OK)
    return HD_EINVAL;
  /* Forget it durably first: a crash between the two steps must not bring
   * back a handler whose removal was acknowledged. */
  if (err == HD_OK && c->store &&
      (err = hd_store_del(c->store, id, why, sizeof(why))) != HD_OK &&
      err != HD_ENOTFOUND) {
    snprintf(msg, msg_size, "cannot delete the registration: %s",
             why[0] ? why : hd_strerror(err));
    hd_log(HD_LOG_ERROR, "store: cannot delete handler %s under key '%s': %s",
           id, key, why[0] ? why : hd_strerror(err));
    return store_code(err);
  }
  if (err == HD_OK || err == HD_ENOTFOUND)
    err = hd_registry_remove(c->reg, key, id);
  if (err == HD_ENOKEY)
    snprintf(msg, msg_size, "no handler registered for key '%s'", key);
  else if (err == HD_ENOTFOUND)
    snprintf(msg, msg_size, "no handler '%s' under key '%s'", id, key);
  else if (err == HD_OK)
    drop_rec(c, id);
  return err;
}

typedef struct list_ctx {
  hd_control *c;
  hd_arena *a;
  Handlers__V1__HandlerInfo **items;
  size_t n, cap;
  hd_err err;
} list_ctx;

/* `s` copied into the arena for a listing, which must be UTF-8 for every
 * client to read it: new registrations are, but one saved before handlerd
 * checked may not be (hd_control_load restores it): its bad bytes are shown
 * as U+FFFD. NULL on ENOMEM. */
static char *list_strdup(hd_arena *a, const char *s) {
  size_t len = strlen(s);
  if (hd_utf8_valid(s, len))
    return hd_arena_strdup(a, s);
  size_t size = hd_utf8_repaired_size(len);
  char *d = size == SIZE_MAX ? NULL : hd_arena_alloc(a, size);
  if (d)
    hd_utf8_repair(d, s, len);
  return d;
}

/* `r` as ListHandlers shows it, every string copied into the arena (the
 * record may go once the control lock is released). NULL on ENOMEM. */
static Handlers__V1__HandlerInfo *info_from(hd_arena *a, const record *r) {
  Handlers__V1__HandlerInfo *hi = hd_arena_alloc(a, sizeof(*hi));
  if (!hi)
    return NULL;
  handlers__v1__handler_info__init(hi);
  hi->kind = r->kind;
  hi->secret_set = r->secret_set != 0;
  hi->key = list_strdup(a, r->key);
  hi->handler_id = hd_arena_strdup(a, r->id);
  hi->target = list_strdup(a, r->target ? r->target : "");
  if (!hi->key || !hi->handler_id || !hi->target)
    return NULL;
  if (r->n_events) {
    hi->events = hd_arena_calloc(a, r->n_events, sizeof(char *));
    if (!hi->events)
      return NULL;
    for (; hi->n_events < r->n_events; hi->n_events++)
      if (!(hi->events[hi->n_events] = list_strdup(a, r->events[hi->n_events])))
        return NULL;
  }
  if (r->n_routes) {
    hi->routes = hd_arena_calloc(a, r->n_routes, sizeof(*hi->routes));
    if (!hi->routes)
      return NULL;
    for (; hi->n_routes < r->n_routes; hi->n_routes++) {
      size_t i = hi->n_routes;
      Handlers__V1__HandlerInfo__RoutesEntry *e = hd_arena_alloc(a, sizeof(*e));
      if (!e)
        return NULL;
      handlers__v1__handler_info__routes_entry__init(e);
      e->key = list_strdup(a, r->route_events[i]);
      e->value = list_strdup(a, r->route_targets[i]);
      if (!e->key || !e->value)
        return NULL;
      hi->routes[i] = e;
    }
  }
  return hi;
}

static void list_one(const char *key, hd_handler *member, void *ud) {
  list_ctx *lc = ud;
  (void)key;
  if (lc->err != HD_OK)
    return;
  int found;
  pthread_mutex_lock(&lc->c->lock);
  size_t at = find_rec(lc->c, hd_handler_id(member), &found);
  Handlers__V1__HandlerInfo *hi =
      found ? info_from(lc->a, lc->c->recs[at]) : NULL;
  pthread_mutex_unlock(&lc->c->lock);
  if (!found)
    return; /* removed while listing */
  if (!hi) {
    lc->err = HD_ENOMEM;
    return;
  }
  if (lc->n == lc->cap) {
    size_t cap = lc->cap ? lc->cap * 2 : 16;
    Handlers__V1__HandlerInfo **n = hd_arena_alloc(lc->a, cap * sizeof(*n));
    if (!n) {
      lc->err = HD_ENOMEM;
      return;
    }
    if (lc->n)
      memcpy(n, lc->items, lc->n * sizeof(*n));
    lc->items = n;
    lc->cap = cap;
  }
  lc->items[lc->n++] = hi;
}

hd_err hd_control_list(hd_control *c, hd_arena *a, const char *key,
                       Handlers__V1__ListHandlersReply *reply, char *msg,
                       size_t msg_size) {
  list_ctx lc = {.c = c, .a = a, .err = HD_OK};
  hd_err err =
      hd_registry_foreach(c->reg, key && *key ? key : NULL, list_one, &lc);
  if (err == HD_ENOKEY) {
    if (check_lookup_utf8(key, NULL, msg, msg_size) != HD_OK)
      return HD_EINVAL;
    snprintf(msg, msg_size, "no handler registered for key '%s'", key);
    return err;
  }
  if (err == HD_OK)
    err = lc.err;
  reply->handlers = lc.items;
  reply->n_handlers = lc.n;
  return err;
}
