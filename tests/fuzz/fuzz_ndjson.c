/*
 * fuzz_ndjson: handlerctl's `stream` input, one NDJSON event per line, as
 * the stream command reads it (client/cli/ndjson.h: getline framing, CR/LF
 * stripping, blank lines, json_loadb, the fields with the value/enum/base64
 * parsers of values.c, the failure records), fed from an in-memory FILE.
 * Each event the reader gives is encoded as the client library would send
 * it (hc__encode_event), then decoded and converted as the server does
 * (hd_proto_decode_dispatch, hd_proto_to_event), which may refuse it.
 *
 * Checks: every non-blank line is either an event or counted as a bad
 * line, with one JSON error per failure; every event encodes (or is
 * refused as the stream command would report it) and decodes, with the key
 * and event name it was given (or the --key default).
 */
#include "fuzz_util.h"

#include "internal.h"
#include "ndjson.h"

#include "arena.h"
#include "handlerd/handlerd.h"
#include "proto_event.h"

#include <stdio.h>

#define DEFAULT_KEY "fuzz-key"

/* What the stream command does with an event, up to the wire, and what the
 * server makes of it. 0 when it would be sent. */
static int send_event(const hc_event *ev) {
  uint8_t *buf = NULL;
  size_t len = 0;
  hc_err err = hc__encode_event(ev, &buf, &len);
  if (err != HC_OK) {
    FUZZ_CHECK(err == HC_EINVAL || err == HC_ENOMEM);
    return -1;
  }
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
  return 0;
}

/* Lines the reader does not skip as blank. */
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

  hcli_ndjson_failures f;
  memset(&f, 0, sizeof(f)); /* quiet: print_to NULL */
  f.errors = json_array();  /* as with -o json */
  FUZZ_CHECK(f.errors != NULL);
  hcli_ndjson_reader rd;
  hcli_ndjson_init(&rd, in, DEFAULT_KEY, &f);
  hc_event ev;
  size_t events = 0, sent = 0, last_line = 0;
  int got;
  while ((got = hcli_ndjson_next(&rd, &ev)) >= 0) {
    FUZZ_CHECK(got == 0 || got == 1);
    FUZZ_CHECK(rd.line > last_line);
    last_line = rd.line;
    if (got == 0)
      continue;
    events++;
    FUZZ_CHECK(ev.key != NULL && ev.event != NULL && ev.event[0] != '\0');
    if (send_event(&ev) == 0)
      sent++;
    else /* as the stream command reports it */
      hcli_ndjson_failed(&f, rd.line, "BAD_LINE", "cannot encode");
  }
  size_t bad_lines = rd.bad_lines;
  hcli_ndjson_free(&rd);
  fclose(in);

  FUZZ_CHECK(events + bad_lines == count_lines(data, size));
  FUZZ_CHECK(sent + f.failed == count_lines(data, size));
  FUZZ_CHECK(bad_lines <= f.failed);
  /* One error each, up to the cap (a 4 KiB input can have 2000 lines). */
  FUZZ_CHECK(json_array_size(f.errors) ==
             (f.failed < HCLI_NDJSON_MAX_JSON_ERRORS
                  ? f.failed
                  : HCLI_NDJSON_MAX_JSON_ERRORS));
  json_decref(f.errors);
  return 0;
}
