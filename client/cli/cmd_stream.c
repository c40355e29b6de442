/*
 * handlerctl stream: newline-delimited JSON events from stdin over one
 * DispatchStream call, with a progress line on a terminal and a summary.
 *
 * Replies are read while sending (at most WINDOW requests unanswered), so
 * memory stays bounded whatever the input's length. A line that is not a
 * valid event is reported with its number and counted as failed; it is not
 * sent and does not stop the stream. --key is the default key of the lines
 * without their own "key"; without --key such a line is a bad line.
 */
#include "cli.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WINDOW 4096
#define MAX_PROPERTIES 64
#define MAX_PRINTED_ERRORS 20
#define MAX_JSON_ERRORS 1000

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
  size_t sent, received, ok, failed, bad_lines, handler_failures;
  size_t printed;
  json_t *errors; /* for -o json */
  int progress;
  double start, last_progress;
} stream_run;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A JSON string of `s`; a message quoting a bad input line may hold bytes
 * that are not UTF-8, which JSON cannot carry: those become '?'. */
static json_t *utf8_string(const char *s) {
  json_t *j = json_string(s);
  if (j != NULL)
    return j;
  char *copy = strdup(s);
  if (copy == NULL)
    return json_string("(out of memory)");
  for (unsigned char *p = (unsigned char *)copy; *p; p++)
    if (*p >= 0x80)
      *p = '?';
  j = json_string(copy);
  free(copy);
  return j;
}

/* Records one failure: counted, printed (up to a limit), kept for JSON. */
static void line_failed(stream_run *r, size_t line, const char *code,
                        const char *message) {
  r->failed++;
  if (r->printed < MAX_PRINTED_ERRORS) {
    fprintf(stderr, "%shandlerctl: line %zu: %s: %s\n",
            r->progress ? "\r\033[K" : "", line, code, message);
  } else if (r->printed == MAX_PRINTED_ERRORS) {
    fprintf(stderr, "%shandlerctl: more failures not shown\n",
            r->progress ? "\r\033[K" : "");
  }
  r->printed++;
  if (r->errors != NULL && json_array_size(r->errors) < MAX_JSON_ERRORS)
    json_array_append_new(
        r->errors, json_pack("{s:I, s:s, s:o}", "line", (json_int_t)line,
                             "code", code, "message", utf8_string(message)));
}

static void show_progress(stream_run *r, int force) {
  if (!r->progress)
    return;
  double t = now_s();
  if (!force && t - r->last_progress < 0.1)
    return;
  r->last_progress = t;
  fprintf(stderr, "\r\033[Ksent %zu  ok %zu  failed %zu", r->sent, r->ok,
          r->failed);
  fflush(stderr);
}

/* ---- one line -> one event ---------------------------------------------- */

static const char *str_field(json_t *obj, const char *name, int *bad) {
  json_t *j = json_object_get(obj, name);
  if (j == NULL || json_is_null(j))
    return NULL;
  if (!json_is_string(j)) {
    *bad = 1;
    return NULL;
  }
  return json_string_value(j);
}

static int int_field(json_t *obj, const char *name, int *out, char *err,
                     size_t size) {
  json_t *j = json_object_get(obj, name);
  if (j == NULL)
    return 0;
  if (!json_is_integer(j) || json_integer_value(j) < INT32_MIN ||
      json_integer_value(j) > INT32_MAX) {
    snprintf(err, size, "\"%s\" must be a 32-bit integer", name);
    return -1;
  }
  *out = (int)json_integer_value(j);
  return 0;
}

/*
 * Fills `ev` from the JSON object `obj`; strings are borrowed from `obj` or
 * kept in `pool`. 0 on success, -1 with a reason in `err`.
 */
static int event_from_json(json_t *obj, const char *default_key, hc_event *ev,
                           hc_property *props, hcli_pool *pool, char *err,
                           size_t size) {
  static const char *const known[] = {"event",
                                      "key",
                                      "args",
                                      "topic",
                                      "topic_path",
                                      "path",
                                      "value",
                                      "response",
                                      "type",
                                      "old_value",
                                      "topic_type",
                                      "properties",
                                      "reason",
                                      "code",
                                      "description",
                                      "conversation_id",
                                      "sender_session_id",
                                      "expected",
                                      "received",
                                      NULL};
  const char *name;
  json_t *j;
  json_object_foreach(obj, name, j) {
    size_t i = 0;
    while (known[i] != NULL && strcmp(known[i], name) != 0)
      i++;
    if (known[i] == NULL) {
      snprintf(err, size, "unknown field \"%s\"", name);
      return -1;
    }
  }
  memset(ev, 0, sizeof *ev);
  int bad = 0;
  const char *s;
  ev->key = default_key;
  if ((s = str_field(obj, "key", &bad)) != NULL)
    ev->key = s;
  ev->event = str_field(obj, "event", &bad);
  if (bad || ev->event == NULL || *ev->event == '\0') {
    snprintf(err, size, "\"event\" must be a non-empty string%s",
             bad ? " (and \"key\" a string)" : "");
    return -1;
  }
  if (ev->key == NULL) {
    snprintf(err, size, "no \"key\" on this line and no --key");
    return -1;
  }
  if ((s = str_field(obj, "args", &bad)) != NULL &&
      hcli_parse_args_kind(s, &ev->args) != 0) {
    snprintf(err, size, "unknown \"args\" '%s'", s);
    return -1;
  }
  const char *paths[] = {"topic", "topic_path", "path"};
  for (size_t i = 0; i < 3; i++)
    if ((s = str_field(obj, paths[i], &bad)) != NULL) {
      if (ev->topic_path != NULL) {
        snprintf(err, size, "give one of \"topic\", \"topic_path\", \"path\"");
        return -1;
      }
      ev->topic_path = s;
    }
  ev->error_description = str_field(obj, "description", &bad);
  ev->conversation_id = str_field(obj, "conversation_id", &bad);
  ev->sender_session_id = str_field(obj, "sender_session_id", &bad);
  if (bad) {
    snprintf(err, size,
             "text fields (key, args, topic, description, "
             "conversation_id, ...) must be strings");
    return -1;
  }

  hc_value_type t = HC_VALUE_JSON;
  if ((s = str_field(obj, "type", &bad)) != NULL &&
      hcli_parse_value_type(s, &t) != 0) {
    snprintf(err, size, "unknown \"type\" '%s'", s);
    return -1;
  }
  json_t *value = json_object_get(obj, "value");
  json_t *response = json_object_get(obj, "response");
  if (value != NULL && response != NULL) {
    snprintf(err, size, "give \"value\" or \"response\", not both");
    return -1;
  }
  if (value == NULL)
    value = response;
  char verr[200];
  if (value != NULL &&
      hcli_value_from_json(t, value, pool, &ev->value, verr, sizeof verr)) {
    snprintf(err, size, "\"value\" %s", verr);
    return -1;
  }
  json_t *old = json_object_get(obj, "old_value");
  if (old != NULL &&
      hcli_value_from_json(t, old, pool, &ev->old_value, verr, sizeof verr)) {
    snprintf(err, size, "\"old_value\" %s", verr);
    return -1;
  }
  if ((s = str_field(obj, "topic_type", &bad)) != NULL &&
      hcli_parse_topic_type(s, &ev->topic_type) != 0) {
    snprintf(err, size, "unknown \"topic_type\" '%s'", s);
    return -1;
  }
  json_t *props_j = json_object_get(obj, "properties");
  if (props_j != NULL) {
    if (!json_is_object(props_j) ||
        json_object_size(props_j) > MAX_PROPERTIES) {
      snprintf(err, size,
               "\"properties\" must be an object of at most %d "
               "strings",
               MAX_PROPERTIES);
      return -1;
    }
    json_object_foreach(props_j, name, j) {
      if (!json_is_string(j)) {
        snprintf(err, size, "property \"%s\" must be a string", name);
        return -1;
      }
      props[ev->n_properties].name = name;
      props[ev->n_properties++].value = json_string_value(j);
    }
    ev->properties = props;
  }
  json_t *reason = json_object_get(obj, "reason");
  if (reason != NULL) {
    char num[24];
    const char *text = json_string_value(reason);
    if (json_is_integer(reason)) {
      snprintf(num, sizeof num, "%lld", (long long)json_integer_value(reason));
      text = num;
    }
    if (text == NULL || hcli_parse_reason(text, &ev->reason) != 0) {
      snprintf(err, size, "unknown \"reason\"");
      return -1;
    }
  }
  int code = 0, expected = 0, received = 0;
  if (int_field(obj, "code", &code, err, size) != 0 ||
      int_field(obj, "expected", &expected, err, size) != 0 ||
      int_field(obj, "received", &received, err, size) != 0)
    return -1;
  ev->error_code = code;
  ev->expected = expected;
  ev->received = received;
  return 0;
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
    line_failed(r, seq < r->n_lines ? r->lines[seq] : 0, "INTERNAL",
                hc_strerror(err));
    return 0;
  }
  if (rep->sequence < r->n_lines)
    seq = (size_t)rep->sequence;
  if (rep->code == 0) {
    r->ok++;
    for (size_t i = 0; i < rep->results.count; i++)
      r->handler_failures += !rep->results.items[i].ok;
  } else {
    line_failed(r, seq < r->n_lines ? r->lines[seq] : 0,
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

/* Reads stdin and sends; returns nonzero when the stream ended early. */
static int send_all(stream_run *r, const char *key) {
  char *buf = NULL;
  size_t bufsize = 0, lineno = 0;
  ssize_t n;
  hcli_pool pool = {0};
  hc_property props[MAX_PROPERTIES];
  int ended = 0;
  while (!ended && (n = getline(&buf, &bufsize, stdin)) != -1) {
    lineno++;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
      buf[--n] = '\0';
    if (strspn(buf, " \t") == (size_t)n)
      continue; /* blank line */
    char err[300];
    json_error_t je;
    hc_event ev;
    json_t *obj = json_loadb(buf, (size_t)n, 0, &je);
    if (obj == NULL) {
      snprintf(err, sizeof err, "invalid JSON: %s (column %d)", je.text,
               je.column);
    } else if (!json_is_object(obj)) {
      snprintf(err, sizeof err, "not a JSON object");
    } else if (event_from_json(obj, key, &ev, props, &pool, err, sizeof err) ==
               0) {
      err[0] = '\0';
    }
    if (err[0] != '\0') {
      r->bad_lines++;
      line_failed(r, lineno, "BAD_LINE", err);
    } else if (remember_line(r, lineno) != 0) {
      line_failed(r, lineno, "BAD_LINE", "out of memory");
    } else {
      hc_err e = hc_stream_send(r->s, &ev);
      if (e == HC_OK) {
        r->sent++;
      } else {
        r->n_lines--;
        if (e == HC_ECLOSED)
          ended = 1;
        else
          line_failed(r, lineno, "BAD_LINE", hc_strerror(e));
      }
    }
    json_decref(obj);
    hcli_pool_clear(&pool);
    while (!ended && r->sent - r->received > WINDOW)
      if (recv_one(r) != 0)
        ended = 1;
    show_progress(r, 0);
  }
  free(buf);
  free(pool.items);
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
  r.progress = isatty(STDERR_FILENO);
  r.errors = g->output == HCLI_OUT_JSON ? json_array() : NULL;
  r.start = now_s();
  hc_err err =
      hc_stream_open(conn, g->deadline_ms > 0 ? g->deadline_ms : -1, &r.s);
  if (err != HC_OK && err != HC_ECLOSED) {
    hc_close(conn);
    json_decref(r.errors);
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
  if (r.progress)
    fputs("\r\033[K", stderr);
  /* Requests the server never answered count as failed. */
  size_t unanswered = r.sent > r.received ? r.sent - r.received : 0;
  r.failed += unanswered;
  double rate = elapsed > 0 ? (double)(r.ok + r.failed) / elapsed : 0.0;

  if (fin != HC_OK)
    rc = hcli_report(g, fin, &st);
  else
    rc = r.failed > 0 ? HCLI_EXIT_RPC : HCLI_EXIT_OK;
  if (g->output == HCLI_OUT_JSON) {
    json_t *doc =
        json_pack("{s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:o}", "sent",
                  (json_int_t)r.sent, "ok", (json_int_t)r.ok, "failed",
                  (json_int_t)r.failed, "bad_lines", (json_int_t)r.bad_lines,
                  "handler_failures", (json_int_t)r.handler_failures, "seconds",
                  elapsed, "events_per_second", rate, "errors", r.errors);
    if (fin != HC_OK)
      json_object_set_new(doc, "status",
                          json_pack("{s:s, s:s}", "code",
                                    hc_status_code_name(st.grpc_code),
                                    "message", st.message));
    hcli_json_print(doc);
  } else {
    printf("sent %zu, ok %zu, failed %zu, %.0f events/s", r.sent, r.ok,
           r.failed, rate);
    if (r.handler_failures > 0)
      printf(" (%zu failed handler results)", r.handler_failures);
    putchar('\n');
  }
  free(r.lines);
  return rc;
}
