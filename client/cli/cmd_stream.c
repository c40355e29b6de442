/*
 * handlerctl stream: newline-delimited JSON events from stdin over one
 * DispatchStream call, with a progress line on a terminal and a summary.
 *
 * Replies are read while sending (at most WINDOW requests unanswered), so
 * memory stays bounded whatever the input's length. A line that is not a
 * valid event is reported with its number and counted as failed; it is not
 * sent and does not stop the stream. --key is the default key of the lines
 * without their own "key"; without --key such a line is a bad line.
 *
 * Reading and parsing the lines, and recording failures, is ndjson.c's;
 * this file is the stream call around it.
 */
#include "cli.h"
#include "ndjson.h"

#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define WINDOW 4096

static int run_stream(hcli *g, int argc, char **argv);

const hcli_command hcli_cmd_stream = {
    "stream", "send newline-delimited JSON events from stdin (DispatchStream)",
    "usage: handlerctl stream [--key K] < events.ndjson\n"
    "\n"
    "Reads one JSON object per line from stdin and sends each as an event\n"
    "over one DispatchStream call. Fields (only `event` is required):\n"
    "  event              the event name (update, subscribe, ...)\n"
    "  key                the event's key (default: --key)\n"
    "  args               none, subscribe, update, unsubscribe, error, "
    "response\n"
    "  topic              the topic path (also: topic_path, path)\n"
    "  value              the value (also: response); any JSON for type json\n"
    "  type               json (default), string, int64, double, binary,\n"
    "                     record_v2 (binary types: base64 strings)\n"
    "  old_value          update: the previous value, same type\n"
    "  topic_type         json, string, int64, double, binary, time_series, "
    "record_v2\n"
    "  properties         {\"NAME\": \"VALUE\", ...}\n"
    "  reason             unsubscribe: REQUESTED, CONTROL, ... or 0..6\n"
    "  code, description  error\n"
    "  conversation_id, sender_session_id, expected, received   response\n"
    "Example line:\n"
    "  {\"event\":\"update\",\"topic\":\"a/b\",\"value\":{\"x\":1}}\n"
    "\n"
    "A bad line is reported with its number and counted as failed; the\n"
    "stream goes on. On a terminal, stderr shows progress. At the end one\n"
    "summary line: sent, ok, failed, events/s (-o json: one document with\n"
    "the counts and the errors). Exit 0 when every line succeeded, 1 when\n"
    "any failed.\n"
    "\n"
    "  --key K   the key of every event without its own \"key\" (needed\n"
    "            unless every line has one: a line with neither is a bad "
    "line)\n",
    run_stream};

typedef struct stream_run {
  hc_stream *s;
  /* line number of each request sent, by sequence */
  size_t *lines;
  size_t n_lines, cap_lines;
  size_t sent, received, ok, bad_lines, handler_failures;
  /* Bad lines and refused events; the errors array is for -o json. */
  hcli_ndjson_failures failures;
  double start, last_progress;
} stream_run;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void show_progress(stream_run *r, int force) {
  if (!r->failures.progress)
    return;
  double t = now_s();
  if (!force && t - r->last_progress < 0.1)
    return;
  r->last_progress = t;
  fprintf(stderr, "\r\033[Ksent %zu  ok %zu  failed %zu", r->sent, r->ok,
          r->failures.failed);
  fflush(stderr);
}

/* ---- the stream ---------------------------------------------------------- */

/* Takes one reply. 0 when one was taken, -1 when the stream has ended. */
static int recv_one(stream_run *r) {
  hc_stream_reply *rep = NULL;
  hc_err err = hc_stream_recv(r->s, &rep);
  if (err == HC_ECLOSED)
    return -1;
  size_t seq = r->received++;
  if (err != HC_OK) {
    hcli_ndjson_failed(&r->failures, seq < r->n_lines ? r->lines[seq] : 0,
                       "INTERNAL", hc_strerror(err));
    return 0;
  }
  if (rep->sequence < r->n_lines)
    seq = (size_t)rep->sequence;
  if (rep->code == 0) {
    r->ok++;
    for (size_t i = 0; i < rep->results.count; i++)
      r->handler_failures += !rep->results.items[i].ok;
  } else {
    hcli_ndjson_failed(&r->failures, seq < r->n_lines ? r->lines[seq] : 0,
                       hc_status_code_name(rep->code), rep->message);
  }
  hc_stream_reply_free(rep);
  show_progress(r, 0);
  return 0;
}

static int remember_line(stream_run *r, size_t line) {
  if (r->n_lines == r->cap_lines) {
    size_t cap = r->cap_lines ? r->cap_lines * 2 : 1024;
    size_t *l = realloc(r->lines, cap * sizeof *l);
    if (l == NULL)
      return -1;
    r->lines = l;
    r->cap_lines = cap;
  }
  r->lines[r->n_lines++] = line;
  return 0;
}

/* Sends the event of input line `line`. 1 when the stream has ended. */
static int send_one(stream_run *r, size_t line, const hc_event *ev) {
  if (remember_line(r, line) != 0) {
    hcli_ndjson_failed(&r->failures, line, "BAD_LINE", "out of memory");
    return 0;
  }
  hc_err e = hc_stream_send(r->s, ev);
  if (e == HC_OK) {
    r->sent++;
    return 0;
  }
  r->n_lines--;
  if (e == HC_ECLOSED)
    return 1;
  hcli_ndjson_failed(&r->failures, line, "BAD_LINE", hc_strerror(e));
  return 0;
}

/* Reads stdin and sends; returns nonzero when the stream ended early. */
static int send_all(stream_run *r, const char *key) {
  hcli_ndjson_reader rd;
  hc_event ev;
  int got, ended = 0;

  hcli_ndjson_init(&rd, stdin, key, &r->failures);
  while (!ended && (got = hcli_ndjson_next(&rd, &ev)) >= 0) {
    if (got == 1)
      ended = send_one(r, rd.line, &ev);
    while (!ended && r->sent - r->received > WINDOW)
      if (recv_one(r) != 0)
        ended = 1;
    show_progress(r, 0);
  }
  r->bad_lines = rd.bad_lines;
  hcli_ndjson_free(&rd);
  return ended;
}

static int run_stream(hcli *g, int argc, char **argv) {
  static const struct option own[] = {{"key", required_argument, NULL, 1},
                                      {0, 0, 0, 0}};
  const char *key = NULL, *arg;
  int c, first;
  while ((c = hcli_next_option(g, &hcli_cmd_stream, argc, argv, own, &arg,
                               &first)) != -1)
    if (c == 1)
      key = arg;
  if (first < argc)
    return hcli_usage_error(g,
                            "unexpected argument '%s' (events come from "
                            "stdin)",
                            argv[first]);
  /* Without --key every line must carry its own "key" (checked per line). */
  if (key != NULL && *key == '\0')
    return hcli_usage_error(g, "--key needs a non-empty key");

  int rc;
  hc_conn *conn = hcli_connect(g, &rc);
  if (conn == NULL)
    return rc;
  stream_run r = {0};
  r.failures.print_to = stderr;
  r.failures.progress = isatty(STDERR_FILENO);
  r.failures.errors = g->output == HCLI_OUT_JSON ? json_array() : NULL;
  r.start = now_s();
  hc_err err =
      hc_stream_open(conn, g->deadline_ms > 0 ? g->deadline_ms : -1, &r.s);
  if (err != HC_OK && err != HC_ECLOSED) {
    hc_close(conn);
    json_decref(r.failures.errors);
    fprintf(stderr, "handlerctl: cannot start the stream: %s\n",
            hc_strerror(err));
    return HCLI_EXIT_RPC;
  }
  if (err == HC_OK)
    send_all(&r, key);
  hc_stream_close_send(r.s);
  while (recv_one(&r) == 0)
    ;
  hc_status st;
  hc_err fin = hc_stream_finish(r.s, &st);
  hc_stream_free(r.s);
  hc_close(conn);
  double elapsed = now_s() - r.start;
  if (r.failures.progress)
    fputs("\r\033[K", stderr);
  /* Requests the server never answered count as failed. */
  size_t unanswered = r.sent > r.received ? r.sent - r.received : 0;
  r.failures.failed += unanswered;
  double rate =
      elapsed > 0 ? (double)(r.ok + r.failures.failed) / elapsed : 0.0;

  if (fin != HC_OK)
    rc = hcli_report(g, fin, &st);
  else
    rc = r.failures.failed > 0 ? HCLI_EXIT_RPC : HCLI_EXIT_OK;
  if (g->output == HCLI_OUT_JSON) {
    json_t *doc = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:o}", "sent", (json_int_t)r.sent,
        "ok", (json_int_t)r.ok, "failed", (json_int_t)r.failures.failed,
        "bad_lines", (json_int_t)r.bad_lines, "handler_failures",
        (json_int_t)r.handler_failures, "seconds", elapsed, "events_per_second",
        rate, "errors", r.failures.errors);
    if (fin != HC_OK)
      json_object_set_new(doc, "status",
                          json_pack("{s:s, s:s}", "code",
                                    hc_status_code_name(st.grpc_code),
                                    "message", st.message));
    hcli_json_print(doc);
  } else {
    printf("sent %zu, ok %zu, failed %zu, %.0f events/s", r.sent, r.ok,
           r.failures.failed, rate);
    if (r.handler_failures > 0)
      printf(" (%zu failed handler results)", r.handler_failures);
    putchar('\n');
  }
  free(r.lines);
  return rc;
}
