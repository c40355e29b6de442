/*
 * handlerctl client: connections, unary calls (Dispatch, GetStats,
 * health, raw), errors and status helpers. The handler administration
 * calls are in handlers.c, the delivery calls in deliveries.c.
 *
 * Every unary call runs as one batch on its own pluck completion queue, so
 * calls on one connection may run from several threads at once.
 */
#include "internal.h"
#include "target.h"

#include "handlerd/grpc_status_names.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

/* ---- errors and status ----------------------------------------------------
 */

const char *hc_strerror(hc_err err) {
  switch (err) {
  case HC_OK:
    return "success";
  case HC_EINVAL:
    return "invalid argument";
  case HC_ENOMEM:
    return "out of memory";
  case HC_ECONNECT:
    return "could not connect to the server";
  case HC_ERPC:
    return "the call failed with a gRPC error status";
  case HC_EPROTO:
    return "malformed reply from the server";
  case HC_ECLOSED:
    return "the stream has ended";
  case HC_EIO:
    return "local I/O error";
  case HC_ELAST:
    break;
  }
  return "unknown error";
}

const char *hc_status_code_name(int code) {
  return hd_grpc_status_name(code);
}

void hc__status_set(hc_status *st, int code, const char *fmt, ...) {
  if (st == NULL)
    return;
  st->grpc_code = code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(st->message, sizeof st->message, fmt, ap);
  va_end(ap);
}

hc_err hc__status_from_grpc(hc_status *st, grpc_status_code code,
                            grpc_slice details) {
  if (st != NULL) {
    size_t n = GRPC_SLICE_LENGTH(details);
    if (n >= sizeof st->message)
      n = sizeof st->message - 1;
    st->grpc_code = (int)code;
    memcpy(st->message, GRPC_SLICE_START_PTR(details), n);
    st->message[n] = '\0';
  }
  return code == GRPC_STATUS_OK ? HC_OK : HC_ERPC;
}

/* Local failure before any gRPC status: grpc_code -1. */
hc_err hc__local_error(hc_status *st, hc_err err) {
  hc__status_set(st, -1, "%s", hc_strerror(err));
  return err;
}

char *hc__strdup(const char *s) {
  return strdup(s != NULL ? s : "");
}

void hc_free(void *p) {
  free(p);
}

/* ---- byte buffers
 * ------------------------------------------------------------ */

grpc_byte_buffer *hc__bb_from_bytes(const void *data, size_t len) {
  grpc_slice slice = grpc_slice_from_copied_buffer(data, len);
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
  grpc_slice_unref(slice);
  return bb;
}

hc_err hc__bb_to_bytes(grpc_byte_buffer *bb, uint8_t **out, size_t *len) {
  grpc_byte_buffer_reader reader;
  *out = NULL;
  *len = 0;
  if (!grpc_byte_buffer_reader_init(&reader, bb))
    return HC_EPROTO;
  grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
  grpc_byte_buffer_reader_destroy(&reader);
  size_t n = GRPC_SLICE_LENGTH(all);
  hc_err err = HC_OK;
  if (n > 0) {
    *out = malloc(n);
    if (*out == NULL)
      err = HC_ENOMEM;
    else {
      memcpy(*out, GRPC_SLICE_START_PTR(all), n);
      *len = n;
    }
  }
  grpc_slice_unref(all);
  return err;
}

/* ---- connections
 * ---------------------------------------------------------------- */

gpr_timespec hc__deadline(const hc_conn *c, int ms) {
  if (ms == 0)
    ms = c->default_deadline_ms;
  if (ms < 0)
    return gpr_inf_future(GPR_CLOCK_MONOTONIC);
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                      gpr_time_from_millis(ms, GPR_TIMESPAN));
}

/* Reads a whole file into a NUL-terminated malloc'd string. */
static hc_err read_file(const char *path, char **out) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return HC_EIO;
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  hc_err err = HC_OK;
  while (buf != NULL) {
    if (cap - len < 2) {
      char *grown = realloc(buf, cap * 2);
      if (grown == NULL) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = grown;
      cap *= 2;
    }
    size_t n = fread(buf + len, 1, cap - len - 1, f);
    len += n;
    if (n == 0) {
      if (ferror(f))
        err = HC_EIO;
      break;
    }
  }
  fclose(f);
  if (buf == NULL)
    return HC_ENOMEM;
  if (err != HC_OK) {
    free(buf);
    return err;
  }
  buf[len] = '\0';
  *out = buf;
  return HC_OK;
}

/* Shuts down a pluck queue, takes what is left on it and destroys it (gRPC
 * wants a queue drained before it is destroyed). */
static void pluck_queue_destroy(grpc_completion_queue *cq) {
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_pluck(cq, NULL,
                                     gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL)
             .type != GRPC_QUEUE_SHUTDOWN)
    ;
  grpc_completion_queue_destroy(cq);
}

/* Waits until the channel is READY; fails on TRANSIENT_FAILURE, SHUTDOWN or
 * at the deadline. */
static hc_err wait_connected(grpc_channel *ch, gpr_timespec deadline) {
  grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
  hc_err err = HC_ECONNECT;
  grpc_connectivity_state state = grpc_channel_check_connectivity_state(ch, 1);
  for (;;) {
    if (state == GRPC_CHANNEL_READY) {
      err = HC_OK;
      break;
    }
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE ||
        state == GRPC_CHANNEL_SHUTDOWN)
      break;
    grpc_channel_watch_connectivity_state(ch, state, deadline, cq, cq);
    grpc_event ev = grpc_completion_queue_pluck(
        cq, cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type != GRPC_OP_COMPLETE || !ev.success)
      break; /* deadline */
    state = grpc_channel_check_connectivity_state(ch, 1);
  }
  pluck_queue_destroy(cq);
  return err;
}

hc_err hc_addr_check(const char *addr, char *msg, size_t msg_len) {
  hc_channel_target t;
  hc_err err = hc__target_from_addrs(addr, &t, msg, msg_len);
  if (err == HC_ENOMEM && msg != NULL && msg_len > 0)
    snprintf(msg, msg_len, "%s", hc_strerror(err));
  hc__channel_target_clear(&t);
  return err;
}

hc_err hc_connect(const char *addr, const hc_options *opts, hc_conn **out) {
  if (out != NULL)
    *out = NULL;
  if (addr == NULL || *addr == '\0' || out == NULL)
    return HC_EINVAL;
  hc_options none = {0};
  if (opts == NULL)
    opts = &none;
  if (opts->default_deadline_ms < 0)
    return HC_EINVAL;
  hc_channel_target target;
  hc_err terr = hc__target_from_addrs(addr, &target, NULL, 0);
  if (terr != HC_OK)
    return terr;

  char *pem = NULL;
  if (opts->tls_ca_pem != NULL) {
    hc_err err = read_file(opts->tls_ca_pem, &pem);
    if (err != HC_OK) {
      hc__channel_target_clear(&target);
      return err;
    }
  }
  hc_conn *c = calloc(1, sizeof *c);
  char *auth = NULL;
  if (c == NULL)
    goto nomem;
  c->default_deadline_ms = opts->default_deadline_ms > 0
                               ? opts->default_deadline_ms
                               : HC_DEFAULT_DEADLINE_MS;
  if (opts->bearer_token != NULL) {
    if (asprintf(&auth, "Bearer %s", opts->bearer_token) < 0) {
      auth = NULL;
      goto nomem;
    }
  }

  grpc_init();
  grpc_arg args[5];
  size_t nargs = 0;
  args[nargs].type = GRPC_ARG_INTEGER;
  args[nargs].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
  args[nargs].value.integer = 64 * 1024 * 1024;
  nargs++;
  /* Retries of UNAVAILABLE on the idempotent calls (the service config's
   * retryPolicy) and, for several addresses, round_robin over them. */
  args[nargs].type = GRPC_ARG_INTEGER;
  args[nargs].key = (char *)GRPC_ARG_ENABLE_RETRIES;
  args[nargs].value.integer = 1;
  nargs++;
  args[nargs].type = GRPC_ARG_STRING;
  args[nargs].key = (char *)GRPC_ARG_SERVICE_CONFIG;
  args[nargs].value.string = (char *)hc__service_config(target.round_robin);
  nargs++;
  if (target.authority != NULL) {
    /* Not "a:1,b:2": the first address, as a single one would be. */
    args[nargs].type = GRPC_ARG_STRING;
    args[nargs].key = (char *)GRPC_ARG_DEFAULT_AUTHORITY;
    args[nargs].value.string = target.authority;
    nargs++;
  }
  if (pem != NULL && opts->tls_server_name != NULL) {
    args[nargs].type = GRPC_ARG_STRING;
    args[nargs].key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
    args[nargs].value.string = (char *)opts->tls_server_name;
    nargs++;
  }
  grpc_channel_args chargs = {nargs, args};
  grpc_channel_credentials *creds =
      pem != NULL ? grpc_ssl_credentials_create(pem, NULL, NULL, NULL)
                  : grpc_insecure_credentials_create();
  free(pem);
  pem = NULL;
  if (creds == NULL) {
    grpc_shutdown();
    hc__channel_target_clear(&target);
    free(auth);
    free(c);
    return HC_ECONNECT;
  }
  c->channel = grpc_channel_create(target.target, creds, &chargs);
  grpc_channel_credentials_release(creds);
  hc__channel_target_clear(&target);
  if (c->channel == NULL) {
    grpc_shutdown();
    free(auth);
    free(c);
    return HC_ECONNECT;
  }
  if (auth != NULL) {
    c->has_auth = 1;
    c->auth.key = grpc_slice_from_static_string("authorization");
    c->auth.value = grpc_slice_from_copied_string(auth);
    free(auth);
  }
  if (!opts->lazy_connect) {
    hc_err err = wait_connected(c->channel, hc__deadline(c, 0));
    if (err != HC_OK) {
      hc_close(c);
      return err;
    }
  }
  *out = c;
  return HC_OK;

nomem:
  hc__channel_target_clear(&target);
  free(pem);
  free(auth);
  free(c);
  return HC_ENOMEM;
}

void hc_close(hc_conn *c) {
  if (c == NULL)
    return;
  grpc_channel_destroy(c->channel);
  if (c->has_auth) {
    grpc_slice_unref(c->auth.key);
    grpc_slice_unref(c->auth.value);
  }
  free(c);
  grpc_shutdown();
}

/* ---- unary calls
 * ------------------------------------------------------------------ */

hc_err hc_call_raw(hc_conn *c, const char *method, const void *req, size_t len,
                   void **reply, size_t *reply_len, int deadline_ms,
                   hc_status *st) {
  if (reply != NULL)
    *reply = NULL;
  if (reply_len != NULL)
    *reply_len = 0;
  if (c == NULL || method == NULL || (req == NULL && len > 0))
    return hc__local_error(st, HC_EINVAL);

  grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
  grpc_slice method_slice = grpc_slice_from_copied_string(method);
  grpc_call *call = grpc_channel_create_call(
      c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method_slice, NULL,
      hc__deadline(c, deadline_ms), NULL);
  grpc_slice_unref(method_slice);
  grpc_byte_buffer *send = hc__bb_from_bytes(req != NULL ? req : "", len);
  grpc_byte_buffer *recv = NULL;
  grpc_metadata_array md_in, md_trailing;
  grpc_metadata_array_init(&md_in);
  grpc_metadata_array_init(&md_trailing);
  grpc_status_code code = GRPC_STATUS_UNKNOWN;
  grpc_slice details = grpc_empty_slice();
  grpc_metadata auth = c->auth; /* a private copy: grpc scribbles on it */

  grpc_op ops[6];
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = c->has_auth ? 1 : 0;
  ops[0].data.send_initial_metadata.metadata = c->has_auth ? &auth : NULL;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = send;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &md_in;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &recv;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &md_trailing;
  ops[5].data.recv_status_on_client.status = &code;
  ops[5].data.recv_status_on_client.status_details = &details;

  hc_err err;
  grpc_call_error ce = call != NULL && send != NULL
                           ? grpc_call_start_batch(call, ops, 6, call, NULL)
                           : GRPC_CALL_ERROR;
  if (ce != GRPC_CALL_OK) {
    err = send == NULL ? HC_ENOMEM : HC_ECONNECT;
    hc__status_set(st, -1, "cannot start the call: %s",
                   grpc_call_error_to_string(ce));
  } else {
    grpc_event ev = grpc_completion_queue_pluck(
        cq, call, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    (void)ev; /* RECV_STATUS_ON_CLIENT always succeeds: see `code` */
    err = hc__status_from_grpc(st, code, details);
    if (err == HC_OK && recv == NULL) {
      err = HC_EPROTO;
      hc__status_set(st, 0, "the server sent no reply message");
    } else if (err == HC_OK) {
      uint8_t *bytes;
      size_t n;
      err = hc__bb_to_bytes(recv, &bytes, &n);
      if (err != HC_OK) {
        hc__status_set(st, 0, "unreadable reply message");
      } else {
        if (reply != NULL)
          *reply = bytes;
        else
          free(bytes);
        if (reply_len != NULL)
          *reply_len = n;
      }
    }
  }

  if (recv != NULL)
    grpc_byte_buffer_destroy(recv);
  if (send != NULL)
    grpc_byte_buffer_destroy(send);
  grpc_slice_unref(details);
  grpc_metadata_array_destroy(&md_in);
  grpc_metadata_array_destroy(&md_trailing);
  if (call != NULL)
    grpc_call_unref(call);
  pluck_queue_destroy(cq);
  return err;
}

/* Packs `msg`, calls `method`, unpacks the reply with `desc`. */
hc_err hc__call_pb(hc_conn *c, const char *method, const ProtobufCMessage *msg,
                   const ProtobufCMessageDescriptor *desc, int deadline_ms,
                   ProtobufCMessage **reply, hc_status *st) {
  size_t len = protobuf_c_message_get_packed_size(msg);
  uint8_t *buf = malloc(len > 0 ? len : 1);
  if (buf == NULL)
    return hc__local_error(st, HC_ENOMEM);
  protobuf_c_message_pack(msg, buf);
  void *out = NULL;
  size_t out_len = 0;
  hc_err err =
      hc_call_raw(c, method, buf, len, &out, &out_len, deadline_ms, st);
  free(buf);
  if (err != HC_OK)
    return err;
  *reply = protobuf_c_message_unpack(desc, NULL, out_len, out);
  free(out);
  if (*reply == NULL) {
    hc__status_set(st, 0, "cannot parse the %s reply", desc->name);
    return HC_EPROTO;
  }
  return HC_OK;
}

hc_err hc_dispatch(hc_conn *c, const hc_event *ev, int deadline_ms,
                   hc_results **out, hc_status *st) {
  if (out != NULL)
    *out = NULL;
  if (c == NULL || ev == NULL || out == NULL)
    return hc__local_error(st, HC_EINVAL);
  uint8_t *buf;
  size_t len;
  hc_err err = hc__encode_event(ev, &buf, &len);
  if (err != HC_OK)
    return hc__local_error(st, err);
  void *raw = NULL;
  size_t raw_len = 0;
  err = hc_call_raw(c, HC_METHOD_DISPATCH, buf, len, &raw, &raw_len,
                    deadline_ms, st);
  free(buf);
  if (err != HC_OK)
    return err;
  Handlers__V1__DispatchReply *reply =
      handlers__v1__dispatch_reply__unpack(NULL, raw_len, raw);
  free(raw);
  if (reply == NULL) {
    hc__status_set(st, 0, "cannot parse the DispatchReply");
    return HC_EPROTO;
  }
  hc_results *r = calloc(1, sizeof *r);
  err = r == NULL ? HC_ENOMEM
                  : hc__results_from_pb(reply->results, reply->n_results, r);
  handlers__v1__dispatch_reply__free_unpacked(reply, NULL);
  if (err != HC_OK) {
    free(r);
    return hc__local_error(st, err);
  }
  *out = r;
  return HC_OK;
}

/* ---- stats ---- */

void hc_stats_free(hc_stats *s) {
  if (s == NULL)
    return;
  for (size_t i = 0; i < s->count; i++) {
    free(s->items[i].name);
    free(s->items[i].labels);
  }
  free(s->items);
  free(s);
}

static int cmp_label(const void *a, const void *b) {
  const Handlers__V1__StatsSample__LabelsEntry *x = *(void *const *)a;
  const Handlers__V1__StatsSample__LabelsEntry *y = *(void *const *)b;
  return strcmp(x->key, y->key);
}

/* 'k="v",k2="v2"' in key order (a map has no order on the wire). */
static char *labels_text(Handlers__V1__StatsSample *sm) {
  size_t len = 1;
  if (sm->n_labels > 1) /* labels is NULL when there are none */
    qsort(sm->labels, sm->n_labels, sizeof(*sm->labels), cmp_label);
  for (size_t i = 0; i < sm->n_labels; i++)
    len += strlen(sm->labels[i]->key) + strlen(sm->labels[i]->value) + 4;
  char *out = malloc(len), *p = out;
  if (out == NULL)
    return NULL;
  *p = '\0';
  for (size_t i = 0; i < sm->n_labels; i++)
    p += sprintf(p, "%s%s=\"%s\"", i ? "," : "", sm->labels[i]->key,
                 sm->labels[i]->value);
  return out;
}

hc_err hc_get_stats(hc_conn *c, int deadline_ms, hc_stats **out,
                    hc_status *st) {
  if (out != NULL)
    *out = NULL;
  if (c == NULL || out == NULL)
    return hc__local_error(st, HC_EINVAL);
  Handlers__V1__GetStatsRequest req = HANDLERS__V1__GET_STATS_REQUEST__INIT;
  Handlers__V1__GetStatsReply *reply = NULL;
  hc_err err = hc__call_pb(c, HC_METHOD_STATS, &req.base,
                           &handlers__v1__get_stats_reply__descriptor,
                           deadline_ms, (ProtobufCMessage **)&reply, st);
  if (err != HC_OK)
    return err;
  hc_stats *s = calloc(1, sizeof *s);
  if (s != NULL && reply->n_samples > 0 &&
      (s->items = calloc(reply->n_samples, sizeof *s->items)) == NULL) {
    free(s);
    s = NULL;
  }
  err = s == NULL ? HC_ENOMEM : HC_OK;
  for (size_t i = 0; err == HC_OK && i < reply->n_samples; i++) {
    hc_stat *x = &s->items[i];
    s->count = i + 1;
    x->name = strdup(reply->samples[i]->name);
    x->labels = labels_text(reply->samples[i]);
    x->value = reply->samples[i]->value;
    if (x->name == NULL || x->labels == NULL)
      err = HC_ENOMEM;
  }
  handlers__v1__get_stats_reply__free_unpacked(reply, NULL);
  if (err != HC_OK) {
    hc_stats_free(s);
    return hc__local_error(st, err);
  }
  *out = s;
  return HC_OK;
}

/* ---- health
 * ----------------------------------------------------------------------- */

/* Reads a base-128 varint; returns the bytes used, 0 when malformed. */
static size_t read_varint(const uint8_t *p, size_t len, uint64_t *v) {
  *v = 0;
  for (size_t i = 0; i < len && i < 10; i++) {
    *v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
    if ((p[i] & 0x80) == 0)
      return i + 1;
  }
  return 0;
}

hc_err hc_health_check(hc_conn *c, const char *service, int deadline_ms,
                       hc_serving_status *status_out, hc_status *st) {
  if (status_out != NULL)
    *status_out = HC_HEALTH_UNKNOWN;
  if (c == NULL)
    return hc__local_error(st, HC_EINVAL);
  /* HealthCheckRequest { string service = 1; } */
  size_t slen = service != NULL ? strlen(service) : 0;
  uint8_t *req = malloc(slen + 11);
  if (req == NULL)
    return hc__local_error(st, HC_ENOMEM);
  size_t len = 0;
  if (slen > 0) {
    req[len++] = 0x0a; /* field 1, length-delimited */
    for (size_t v = slen;; v >>= 7) {
      req[len++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
      if (v <= 0x7f)
        break;
    }
    memcpy(req + len, service, slen);
    len += slen;
  }
  void *raw = NULL;
  size_t raw_len = 0;
  hc_err err = hc_call_raw(c, HC_METHOD_HEALTH, req, len, &raw, &raw_len,
                           deadline_ms, st);
  free(req);
  if (err != HC_OK)
    return err;
  /* HealthCheckResponse { ServingStatus status = 1; }: skip other fields. */
  const uint8_t *p = raw;
  uint64_t status = 0;
  size_t i = 0;
  while (err == HC_OK && i < raw_len) {
    uint64_t tag, v;
    size_t n = read_varint(p + i, raw_len - i, &tag);
    if (n == 0) {
      err = HC_EPROTO;
      break;
    }
    i += n;
    switch (tag & 7) {
    case 0: /* varint */
      n = read_varint(p + i, raw_len - i, &v);
      if (n == 0)
        err = HC_EPROTO;
      else if (tag >> 3 == 1)
        status = v;
      i += n;
      break;
    case 1: /* 64-bit */
      i += 8;
      break;
    case 2: /* length-delimited */
      n = read_varint(p + i, raw_len - i, &v);
      if (n == 0 || v > raw_len - i - n)
        err = HC_EPROTO;
      i += n + v;
      break;
    case 5: /* 32-bit */
      i += 4;
      break;
    default:
      err = HC_EPROTO;
    }
    if (i > raw_len)
      err = HC_EPROTO;
  }
  free(raw);
  if (err != HC_OK) {
    hc__status_set(st, 0, "cannot parse the HealthCheckResponse");
    return err;
  }
  if (status_out != NULL)
    *status_out = (hc_serving_status)status;
  return HC_OK;
}
