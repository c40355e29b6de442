/*
 * fuzz_control: a sequence of control-plane requests, each decoded and
 * handled as the gRPC front does (the adapter, registration_pb.h:
 * hd_grpc_control_add / hd_grpc_control_list, and hd_control_remove), on
 * a fresh registry per input with the built-in functions and the real
 * webhook kind (deny_private on; names resolve through fake_dns.c, so no
 * traffic), and an in-memory store standing in for the state dir (it keeps
 * each registration as AddHandlerRequest bytes, through the adapter).
 *
 * Input: records of [op][len: 2 bytes, big-endian][len bytes of message]:
 *   op % 4 == 0 or 3: AddHandlerRequest, 1: RemoveHandlerRequest,
 *   2: ListHandlersRequest.
 * In a RemoveHandlerRequest, handler_id "$N" (N a digit) stands for the id
 * the Nth successful AddHandler of this input returned (ids are random, a
 * fuzzer could not guess them), and an empty key for that add's key.
 *
 * Checks: refusals carry a message; a returned id is a valid handler id;
 * removing what is registered under its key works, anything else fails with
 * NOT_FOUND; ListHandlers shows exactly what is registered and packs; every
 * registration in the store loads back into a new control (same ids, same
 * count) and everything removes cleanly at the end.
 */
#include "arena.h"
#include "control.h"
#include "fuzz_util.h"
#include "handlerd/handlerd.h"
#include "proto_event.h"
#include "registration_pb.h"
#include "store.h"
#include "utf8.h"
#include "webhook_kind.h"

#include <grpc/status.h>

#define MAX_OPS 24
#define MAX_LIVE 16

static hd_functions *fns;
static hd_webhook_engine *engine;

/* ---- an hd_store in memory ---------------------------------------------- */

typedef struct mem_rec {
  char *id, *key;
  uint8_t *bytes;
  size_t len;
} mem_rec;

typedef struct mem_store {
  hd_store base;
  mem_rec recs[64];
  size_t n;
} mem_store;

static void mem_rec_free(mem_rec *r) {
  free(r->id);
  free(r->key);
  free(r->bytes);
}

/* `reg` packed as an AddHandlerRequest (malloc'd). */
static hd_err pack_registration(const hd_registration *reg, uint8_t **out,
                                size_t *len) {
  hd_arena *a = hd_arena_new(1024);
  Handlers__V1__AddHandlerRequest *req = NULL;
  FUZZ_CHECK(a != NULL);
  hd_err err = hd_registration_to_pb(a, reg, &req);
  if (err == HD_OK) {
    *len = handlers__v1__add_handler_request__get_packed_size(req);
    *out = malloc(*len ? *len : 1);
    if (*out)
      handlers__v1__add_handler_request__pack(req, *out);
    else
      err = HD_ENOMEM;
  }
  hd_arena_wipe(a);
  hd_arena_free(a);
  return err;
}

static hd_err mem_put(hd_store *s, const char *id, const hd_registration *reg,
                      char *msg, size_t msg_size) {
  mem_store *m = (mem_store *)s;
  uint8_t *req = NULL;
  size_t len = 0;
  const char *key = reg->key;
  for (size_t i = 0; i < m->n; i++)
    FUZZ_CHECK(strcmp(m->recs[i].id, id) != 0); /* control checks first */
  if (m->n == sizeof(m->recs) / sizeof(m->recs[0])) {
    snprintf(msg, msg_size, "memory store: full");
    return HD_EIO;
  }
  if (pack_registration(reg, &req, &len) != HD_OK)
    return HD_ENOMEM;
  mem_rec *r = &m->recs[m->n];
  r->id = strdup(id);
  r->key = strdup(key);
  r->bytes = req;
  if (!r->id || !r->key) {
    mem_rec_free(r);
    return HD_ENOMEM;
  }
  r->len = len;
  m->n++;
  return HD_OK;
}

static hd_err mem_del(hd_store *s, const char *id, char *msg, size_t msg_size) {
  mem_store *m = (mem_store *)s;
  (void)msg, (void)msg_size;
  for (size_t i = 0; i < m->n; i++)
    if (strcmp(m->recs[i].id, id) == 0) {
      mem_rec_free(&m->recs[i]);
      memmove(&m->recs[i], &m->recs[i + 1], (m->n - i - 1) * sizeof(mem_rec));
      m->n--;
      return HD_OK;
    }
  return HD_ENOTFOUND;
}

static hd_err mem_load(hd_store *s, hd_store_registration_fn *fn, void *ud,
                       char *msg, size_t msg_size) {
  mem_store *m = (mem_store *)s;
  for (size_t i = 0; i < m->n; i++) {
    hd_arena *a = hd_arena_new(1024);
    FUZZ_CHECK(a != NULL);
    Handlers__V1__AddHandlerRequest *req =
        handlers__v1__add_handler_request__unpack(
            hd_arena_pb_allocator(a), m->recs[i].len, m->recs[i].bytes);
    hd_registration reg;
    /* What was put always reads back. */
    FUZZ_CHECK(req != NULL);
    FUZZ_CHECK(hd_registration_from_pb(a, req, &reg, msg, msg_size) == HD_OK);
    FUZZ_CHECK(strcmp(reg.key, m->recs[i].key) == 0);
    hd_err err = fn(m->recs[i].id, &reg, ud);
    hd_arena_wipe(a);
    hd_arena_free(a);
    if (err != HD_OK)
      return err;
  }
  return HD_OK;
}

static void mem_close(hd_store *s) {
  mem_store *m = (mem_store *)s;
  for (size_t i = 0; i < m->n; i++)
    mem_rec_free(&m->recs[i]);
  m->n = 0;
}

static const hd_store_vtable mem_ops = {.name = "memory",
                                        .put = mem_put,
                                        .del = mem_del,
                                        .load = mem_load,
                                        .close = mem_close};

/* ---- setup --------------------------------------------------------------- */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  hd_log_set_level(HD_LOG_ERROR);
  hd_webhook_engine_config cfg;
  hd_webhook_engine_config_init(&cfg);
  cfg.instance = "fuzz";
  cfg.deny_private = 1;
  if (hd_functions_new(&fns) || hd_builtins_register(fns, "/dev/null") ||
      hd_webhook_engine_start(&cfg, &engine))
    abort();
  return 0;
}

typedef struct plane {
  hd_registry *reg;
  hd_control *ctl;
} plane;

static void plane_open(plane *p, mem_store *store) {
  if (hd_registry_new(&p->reg) || hd_control_new(p->reg, fns, &p->ctl))
    abort();
  static hd_webhook_kind_ctx wk;
  wk.engine = engine;
  hd_control_set_kind_context(p->ctl, HD_TARGET_WEBHOOK, &wk);
  hd_control_set_store(p->ctl, &store->base);
}

static void plane_close(plane *p) {
  hd_control_free(p->ctl);
  hd_registry_free(p->reg);
}

typedef struct live {
  char id[HD_HANDLER_ID_MAX + 1];
  char *key;
  int removed;
} live;

typedef struct state {
  plane p;
  mem_store store;
  live adds[MAX_LIVE];
  size_t n_adds;
} state;

static size_t live_count(const state *s) {
  size_t n = 0;
  for (size_t i = 0; i < s->n_adds; i++)
    n += !s->adds[i].removed;
  return n;
}

/* ListHandlers for `key` ("" all): packs, and for "" shows exactly the live
 * adds. */
static void check_list(state *s, plane *p, const char *key) {
  char msg[512] = "";
  hd_arena *a = hd_arena_new(1024);
  FUZZ_CHECK(a != NULL);
  Handlers__V1__ListHandlersReply reply =
      HANDLERS__V1__LIST_HANDLERS_REPLY__INIT;
  hd_err err = hd_grpc_control_list(p->ctl, a, key, &reply, msg, sizeof(msg));
  if (err != HD_OK) {
    /* An unknown key; one that is not UTF-8 is a bad argument. */
    FUZZ_CHECK(key[0] != '\0');
    FUZZ_CHECK(err ==
               (hd_utf8_valid(key, strlen(key)) ? HD_ENOKEY : HD_EINVAL));
    FUZZ_CHECK(msg[0] != '\0');
  } else {
    size_t len = protobuf_c_message_get_packed_size(&reply.base);
    uint8_t *buf = malloc(len ? len : 1);
    FUZZ_CHECK(buf && protobuf_c_message_pack(&reply.base, buf) == len);
    free(buf);
    if (key[0] == '\0') {
      FUZZ_CHECK(reply.n_handlers == live_count(s));
      FUZZ_CHECK(hd_control_count(p->ctl) == live_count(s));
      for (size_t i = 0; i < s->n_adds; i++) {
        if (s->adds[i].removed)
          continue;
        size_t hits = 0;
        for (size_t j = 0; j < reply.n_handlers; j++)
          hits += strcmp(reply.handlers[j]->handler_id, s->adds[i].id) == 0 &&
                  strcmp(reply.handlers[j]->key, s->adds[i].key) == 0;
        FUZZ_CHECK(hits == 1);
      }
    }
  }
  hd_arena_free(a);
}

static int wants_new_secret(const Handlers__V1__AddHandlerRequest *req) {
  const Handlers__V1__Target *t = req->target;
  if (t && t->kind_case == HANDLERS__V1__TARGET__KIND_WEBHOOK)
    return t->webhook->new_secret;
  for (size_t i = 0; i < req->n_routes; i++) {
    t = req->routes[i]->value;
    if (t && t->kind_case == HANDLERS__V1__TARGET__KIND_WEBHOOK &&
        t->webhook->new_secret)
      return 1;
  }
  return 0;
}

static void do_add(state *s, const uint8_t *data, size_t len) {
  char msg[512] = "";
  hd_arena *a = hd_arena_new(1024);
  FUZZ_CHECK(a != NULL);
  Handlers__V1__AddHandlerRequest *req =
      handlers__v1__add_handler_request__unpack(hd_arena_pb_allocator(a), len,
                                                data);
  if (req) {
    Handlers__V1__AddHandlerReply reply = HANDLERS__V1__ADD_HANDLER_REPLY__INIT;
    size_t stored = s->store.n;
    hd_err err =
        hd_grpc_control_add(s->p.ctl, a, req, &reply, msg, sizeof(msg));
    if (err == HD_OK) {
      size_t idlen = strlen(reply.handler_id);
      FUZZ_CHECK(idlen > 0 && idlen <= HD_HANDLER_ID_MAX);
      FUZZ_CHECK(s->store.n == stored + 1);
      if (wants_new_secret(req))
        FUZZ_CHECK(strncmp(reply.secret, "whsec_", 6) == 0);
      else
        FUZZ_CHECK(reply.secret[0] == '\0');
      if (s->n_adds < MAX_LIVE) {
        live *l = &s->adds[s->n_adds++];
        snprintf(l->id, sizeof(l->id), "%s", reply.handler_id);
        l->key = strdup(req->key);
        FUZZ_CHECK(l->key != NULL);
      } else {
        FUZZ_CHECK(hd_control_remove(s->p.ctl, req->key, reply.handler_id, msg,
                                     sizeof(msg)) == HD_OK);
      }
    } else {
      FUZZ_CHECK(s->store.n == stored);
      FUZZ_CHECK(err == HD_EINVAL || err == HD_EUNSUPPORTED ||
                 err == HD_EEXIST || err == HD_ENOMEM || err == HD_EIO ||
                 err == HD_EBUSY);
      FUZZ_CHECK(hd_proto_status_of(err) != GRPC_STATUS_OK);
      if (err == HD_EINVAL)
        FUZZ_CHECK(msg[0] != '\0');
    }
  }
  hd_arena_wipe(a);
  hd_arena_free(a);
}

static void do_remove(state *s, const uint8_t *data, size_t len) {
  char msg[512] = "";
  hd_arena *a = hd_arena_new(512);
  FUZZ_CHECK(a != NULL);
  Handlers__V1__RemoveHandlerRequest *req =
      handlers__v1__remove_handler_request__unpack(hd_arena_pb_allocator(a),
                                                   len, data);
  if (req && req->handler_id[0] == '$' && req->handler_id[1] >= '0' &&
      req->handler_id[1] <= '9' && req->handler_id[2] == '\0' && s->n_adds) {
    live *l = &s->adds[(size_t)(req->handler_id[1] - '0') % s->n_adds];
    req->handler_id = l->id;
    if (req->key[0] == '\0')
      req->key = l->key;
  }
  /* As server.c's handle_remove: both fields are required. */
  if (req && req->key[0] && req->handler_id[0]) {
    live *target = NULL;
    for (size_t i = 0; i < s->n_adds; i++)
      if (!s->adds[i].removed && strcmp(s->adds[i].id, req->handler_id) == 0 &&
          strcmp(s->adds[i].key, req->key) == 0)
        target = &s->adds[i];
    size_t stored = s->store.n;
    hd_err err = hd_control_remove(s->p.ctl, req->key, req->handler_id, msg,
                                   sizeof(msg));
    if (target) {
      FUZZ_CHECK(err == HD_OK);
      FUZZ_CHECK(s->store.n == stored - 1);
      target->removed = 1;
    } else if (!hd_utf8_valid(req->key, strlen(req->key)) ||
               !hd_utf8_valid(req->handler_id, strlen(req->handler_id))) {
      /* Names nothing and is not UTF-8: a bad argument. */
      FUZZ_CHECK(err == HD_EINVAL);
      FUZZ_CHECK(msg[0] != '\0');
      FUZZ_CHECK(s->store.n == stored);
    } else {
      FUZZ_CHECK(err == HD_ENOKEY || err == HD_ENOTFOUND);
      FUZZ_CHECK(hd_proto_status_of(err) == GRPC_STATUS_NOT_FOUND);
      FUZZ_CHECK(msg[0] != '\0');
      FUZZ_CHECK(s->store.n == stored);
    }
  }
  hd_arena_free(a);
}

static void do_list(state *s, const uint8_t *data, size_t len) {
  hd_arena *a = hd_arena_new(512);
  FUZZ_CHECK(a != NULL);
  Handlers__V1__ListHandlersRequest *req =
      handlers__v1__list_handlers_request__unpack(hd_arena_pb_allocator(a), len,
                                                  data);
  if (req)
    check_list(s, &s->p, req->key);
  hd_arena_free(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  state *s = calloc(1, sizeof(*s));
  FUZZ_CHECK(s != NULL);
  s->store.base.vt = &mem_ops;
  plane_open(&s->p, &s->store);

  fz f = {data, size};
  for (int ops = 0; f.n > 0 && ops < MAX_OPS; ops++) {
    uint8_t op = fz_u8(&f);
    size_t len = (size_t)fz_u8(&f) << 8;
    len |= fz_u8(&f);
    if (len > f.n)
      len = f.n;
    const uint8_t *msg = f.p;
    f.p += len;
    f.n -= len;
    switch (op % 4) {
    case 1:
      do_remove(s, msg, len);
      break;
    case 2:
      do_list(s, msg, len);
      break;
    default:
      do_add(s, msg, len);
      break;
    }
  }
  check_list(s, &s->p, "");
  FUZZ_CHECK(s->store.n == live_count(s));

  /* A restart: everything saved loads back, with the same ids. */
  plane again;
  char msg[512] = "";
  size_t loaded = 0;
  plane_open(&again, &s->store);
  hd_err load_err = hd_control_load(again.ctl, &loaded, msg, sizeof(msg));
  if (load_err != HD_OK)
    fprintf(stderr, "reload failed: %s: %s\n", hd_strerror(load_err), msg);
  FUZZ_CHECK(load_err == HD_OK);
  FUZZ_CHECK(loaded == live_count(s));
  check_list(s, &again, "");

  /* Everything removes, in both, and nothing is left. */
  for (size_t i = 0; i < s->n_adds; i++) {
    live *l = &s->adds[i];
    if (!l->removed) {
      FUZZ_CHECK(hd_control_remove(again.ctl, l->key, l->id, msg,
                                   sizeof(msg)) == HD_OK);
      /* The row is gone from the store already: still removes. */
      FUZZ_CHECK(hd_control_remove(s->p.ctl, l->key, l->id, msg, sizeof(msg)) ==
                 HD_OK);
    }
    free(l->key);
  }
  FUZZ_CHECK(hd_control_count(again.ctl) == 0);
  FUZZ_CHECK(hd_registry_key_count(again.reg) == 0);
  FUZZ_CHECK(hd_control_count(s->p.ctl) == 0);
  FUZZ_CHECK(hd_registry_key_count(s->p.reg) == 0);
  FUZZ_CHECK(s->store.n == 0);
  plane_close(&again);
  plane_close(&s->p);
  mem_close(&s->store.base);
  free(s);
  return 0;
}
