/*
 * fuzz_ndjson: handlerctl's `stream` input, one NDJSON event per line, as
 * cmd_stream.c reads it: send_all() (getline framing, CR/LF stripping,
 * blank lines, json_loadb, event_from_json with the value/enum/base64
 * parsers of values.c), fed from an in-memory stdin. Each event that would
 * be sent is encoded as the client library does (hc__encode_event), then
 * decoded and converted as the server does (hd_proto_decode_dispatch,
 * hd_proto_to_event), which may refuse it.
 *
 * cmd_stream.c is compiled into this target (event_from_json and send_all
 * are static) with hc_stream_send renamed to the stub below; the functions
 * main.c would provide are stubbed too (main.c has main()).
 *
 * Checks: every non-blank line is either sent or counted as a bad line;
 * every encoded event decodes, with the key and event name it was given
 * (or the --key default).
 */
#include "fuzz_util.h"

#include "cli.h"
#include "internal.h"

#include <errno.h>
#include <stdio.h>

hc_err fuzz_stream_send(hc_stream *s, const hc_event *ev);
#define hc_stream_send fuzz_stream_send
#include "../../client/cli/cmd_stream.c"
#undef hc_stream_send

#include "arena.h"
#include "handlerd/handlerd.h"
#include "proto_event.h"

#define DEFAULT_KEY "fuzz-key"

static size_t encoded;

hc_err fuzz_stream_send(hc_stream *s, const hc_event *ev) {
  (void)s;
  uint8_t *buf = NULL;
  size_t len = 0;
  hc_err err = hc__encode_event(ev, &buf, &len);
  if (err != HC_OK) {
    FUZZ_CHECK(err == HC_EINVAL || err == HC_ENOMEM);
    return err;
  }
  encoded++;
  char msg[512];
  hd_arena *a = hd_arena_new(1024);
  FUZZ_CHECK(a != NULL);
  Handlers__V1__DispatchRequest *req;
  FUZZ_CHECK(hd_proto_decode_dispatch(a, buf, len, &req, msg, sizeof(msg)) ==
             HD_OK);
  FUZZ_CHECK(strcmp(req->key, ev->key ? ev->key : "") == 0);
  FUZZ_CHECK(strcmp(req->event, ev->event) == 0);
  hd_event hev;
  if (hd_proto_to_event(a, req, &hev, msg, sizeof(msg)) == HD_OK)
    FUZZ_CHECK(strcmp(hev.key, req->key) == 0);
  hd_arena_free(a);
  free(buf);
  return HC_OK;
}

/* ---- what main.c provides to the subcommands ----------------------------- */

int hcli_next_option(hcli *g, const hcli_command *cmd, int argc, char **argv,
                     const struct option *own, const char **arg,
                     int *first_arg) {
  (void)g, (void)cmd, (void)argv, (void)own, (void)arg;
  *first_arg = argc;
  return -1;
}

int hcli_usage_error(const hcli *g, const char *fmt, ...) {
  (void)g, (void)fmt;
  return HCLI_EXIT_USAGE;
}

hc_conn *hcli_connect(const hcli *g, int *exit_code) {
  (void)g;
  *exit_code = HCLI_EXIT_UNREACHABLE;
  return NULL;
}

int hcli_report(const hcli *g, hc_err err, const hc_status *st) {
  (void)g, (void)err, (void)st;
  return HCLI_EXIT_RPC;
}

int hcli_exit_code(hc_err err, const hc_status *st) {
  (void)err, (void)st;
  return HCLI_EXIT_RPC;
}

/* ---- the target ---------------------------------------------------------- */

/* Lines send_all() does not skip as blank. */
static size_t count_lines(const uint8_t *data, size_t size) {
  size_t lines = 0;
  for (size_t i = 0; i < size;) {
    const uint8_t *nl = memchr(data + i, '\n', size - i);
    size_t n = nl ? (size_t)(nl - (data + i)) : size - i;
    const uint8_t *l = data + i;
    i += n + (nl ? 1 : 0);
    while (n > 0 && (l[n - 1] == '\r' || l[n - 1] == '\n'))
      n--;
    size_t blank = 0;
    while (blank < n && (l[blank] == ' ' || l[blank] == '\t'))
      blank++;
    lines += blank != n;
  }
  return lines;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  FILE *in = fmemopen((void *)data, size, "r");
  FUZZ_CHECK(in != NULL);
  FILE *saved = stdin;
  stdin = in;

  stream_run r;
  memset(&r, 0, sizeof(r));
  r.printed = MAX_PRINTED_ERRORS + 1; /* quiet */
  r.errors = json_array();            /* as with -o json */
  encoded = 0;
  int ended = send_all(&r, DEFAULT_KEY);
  stdin = saved;
  fclose(in);

  FUZZ_CHECK(!ended);
  FUZZ_CHECK(r.sent == encoded && r.n_lines == r.sent);
  FUZZ_CHECK(r.sent + r.failed == count_lines(data, size));
  FUZZ_CHECK(r.bad_lines <= r.failed);
  FUZZ_CHECK(json_array_size(r.errors) == r.failed);
  json_decref(r.errors);
  free(r.lines);
  return 0;
}
