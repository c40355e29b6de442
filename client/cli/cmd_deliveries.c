/*
 * handlerctl: looking at async webhook deliveries - deliveries (a filtered
 * page of them, ListDeliveries) and delivery (one in full, GetDelivery).
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

/* The help's paragraph on times, shared by the commands that take them. */
#define TIME_HELP                                                              \
  "T is RFC 3339 (2026-11-30T12:00:00Z, or with an offset: +02:00) or a\n"     \
  "duration ago with its unit (90s, 30m, 1h, 2d).\n"

/* ---- shared -------------------------------------------------------------- */

/* A JSON string of text from the server or a receiver, which need not be
 * UTF-8: jansson refuses such text, so those bytes become '?'. */
static json_t *text_json(const char *s) {
  json_t *j = json_string(s);
  if (j != NULL)
    return j;
  char *copy = strdup(s);
  if (copy == NULL)
    return json_null();
  for (unsigned char *p = (unsigned char *)copy; *p; p++)
    if (*p >= 0x80)
      *p = '?';
  j = json_string(copy);
  free(copy);
  return j;
}

/* True when `len` bytes of `data` are UTF-8 text a terminal shows as it is:
 * no NUL and no control character but tab and line ends (an escape
 * sequence from a receiver must not reach the terminal). */
static int printable_text(const char *data, size_t len) {
  json_t *probe = json_stringn(data, len); /* NULL unless UTF-8 */
  json_decref(probe);
  if (probe == NULL)
    return 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)data[i];
    if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f)
      return 0;
  }
  return 1;
}

/* Bytes in JSON: the text when it is UTF-8, else base64, with the field
 * "<name>_encoding" saying which ("text" or "base64"). */
static void bytes_json(json_t *o, const char *name, const char *data,
                       size_t len) {
  char enc[64];
  json_t *text = json_stringn(data, len);
  snprintf(enc, sizeof enc, "%s_encoding", name);
  if (text != NULL) {
    json_object_set_new(o, name, text);
    json_object_set_new(o, enc, json_string("text"));
    return;
  }
  char *b = hcli_base64_encode(data, len);
  json_object_set_new(o, name, b != NULL ? json_string(b) : json_null());
  json_object_set_new(o, enc, json_string("base64"));
  free(b);
}

static json_t *delivery_json(const hc_delivery *d) {
  json_t *o = json_object();
  json_object_set_new(o, "delivery_id", text_json(d->delivery_id));
  json_object_set_new(o, "event_id", text_json(d->event_id));
  json_object_set_new(o, "key", text_json(d->key));
  json_object_set_new(o, "handler_id", text_json(d->handler_id));
  json_object_set_new(o, "route", text_json(d->route));
  json_object_set_new(o, "event", text_json(d->event));
  json_object_set_new(o, "ordering_key", text_json(d->ordering_key));
  json_object_set_new(o, "state",
                      json_string(hc_delivery_state_name(d->state)));
  json_object_set_new(o, "attempts", json_integer(d->attempts));
  json_object_set_new(o, "created_at_ms", json_integer(d->created_at_ms));
  json_object_set_new(o, "next_attempt_at_ms",
                      json_integer(d->next_attempt_at_ms));
  json_object_set_new(o, "last_http_status", json_integer(d->last_http_status));
  json_object_set_new(o, "last_error", text_json(d->last_error));
  return o;
}

/* The last attempt's outcome in a few words, in `buf`. */
static const char *last_text(const hc_delivery *d, char *buf, size_t size) {
  if (d->last_http_status > 0 && d->last_error[0] != '\0')
    snprintf(buf, size, "http %d: %s", d->last_http_status, d->last_error);
  else if (d->last_http_status > 0)
    snprintf(buf, size, "http %d", d->last_http_status);
  else
    snprintf(buf, size, "%s", d->last_error[0] != '\0' ? d->last_error : "-");
  return buf;
}

/* Reads a time option into *out; 0 or a usage exit code. */
static int time_option(hcli *g, const char *name, const char *arg,
                       int64_t *out) {
  char err[256];
  if (hcli_parse_time_ms(arg, hcli_now_ms(), out, err, sizeof err) != 0)
    return hcli_usage_error(g, "--%s: %s", name, err);
  return 0;
}

/* ---- deliveries ---------------------------------------------------------- */

static int run_deliveries(hcli *g, int argc, char **argv);

const hcli_command hcli_cmd_deliveries = {
    "deliveries", "list async webhook deliveries",
    "usage: handlerctl deliveries [--key K] [--id H] [--state S] [--since T]\n"
    "                             [--until T] [--limit N] [--page-token X]\n"
    "\n"
    "Lists async webhook deliveries (ListDeliveries), newest first, one row\n"
    "each: its id, key, handler, route, event, state, attempts so far, when\n"
    "it was created, when its next attempt is due and the last attempt's\n"
    "outcome. `handlerctl delivery ID` shows one with its body and every\n"
    "attempt. When more match than one page holds, stderr says the\n"
    "--page-token of the next page (-o json: \"next_page_token\").\n"
    "\n"
    "  --key K          only deliveries for key K\n"
    "  --id H           only those of handler H\n"
    "  --state S        only those in state S: pending, in_flight,\n"
    "                   succeeded, failed or dead\n"
    "  --since T        created at or after T\n"
    "  --until T        created before T\n"
    "  --limit N        at most N on this page, 1 to 1000 (default 100)\n"
    "  --page-token X   the next page, as the previous one gave it\n"
    "\n" TIME_HELP,
    run_deliveries};

enum { L_KEY = 1, L_ID, L_STATE, L_SINCE, L_UNTIL, L_LIMIT, L_PAGE_TOKEN };

static int deliveries_option(hcli *g, hc_delivery_filter *f, int c,
                             const char *arg) {
  unsigned long n;
  switch (c) {
  case L_KEY:
    f->key = arg;
    return 0;
  case L_ID:
    f->handler_id = arg;
    return 0;
  case L_STATE:
    if (hcli_parse_delivery_state(arg, &f->state) != 0)
      return hcli_usage_error(g,
                              "unknown --state '%s' (pending, in_flight, "
                              "succeeded, failed, dead)",
                              arg);
    return 0;
  case L_SINCE:
    return time_option(g, "since", arg, &f->since_ms);
  case L_UNTIL:
    return time_option(g, "until", arg, &f->until_ms);
  case L_LIMIT:
    if (hcli_parse_uint(arg, 1000, &n) != 0 || n == 0)
      return hcli_usage_error(g, "--limit is 1 to 1000, not '%s'", arg);
    f->page_size = (unsigned)n;
    return 0;
  case L_PAGE_TOKEN:
    f->page_token = arg;
    return 0;
  }
  return 0;
}

static void deliveries_print(const hc_delivery_page *p) {
  if (p->count == 0) {
    puts("(no deliveries)");
    return;
  }
  static const char *const head[] = {"DELIVERY", "KEY",   "HANDLER",  "ROUTE",
                                     "EVENT",    "STATE", "ATTEMPTS", "CREATED",
                                     "NEXT",     "LAST"};
  hcli_table *t = hcli_table_new(10, head);
  for (size_t i = 0; i < p->count; i++) {
    const hc_delivery *d = &p->items[i];
    char attempts[16], created[40], next[40], last[600];
    snprintf(attempts, sizeof attempts, "%u", d->attempts);
    const char *row[] = {
        d->delivery_id,
        d->key,
        d->handler_id,
        d->route[0] != '\0' ? d->route : "-",
        d->event,
        hc_delivery_state_name(d->state),
        attempts,
        hcli_time_text(d->created_at_ms, created, sizeof created),
        hcli_time_text(d->next_attempt_at_ms, next, sizeof next),
        last_text(d, last, sizeof last)};
    hcli_table_add(t, row);
  }
  hcli_table_print(t, stdout);
}

static hc_err deliveries_call(hc_conn *conn, const void *in, void *out,
                              hc_status *st) {
  return hc_list_deliveries(conn, in, 0, out, st);
}

static int run_deliveries(hcli *g, int argc, char **argv) {
  static const struct option own[] = {
      {"key", required_argument, NULL, L_KEY},
      {"id", required_argument, NULL, L_ID},
      {"state", required_argument, NULL, L_STATE},
      {"since", required_argument, NULL, L_SINCE},
      {"until", required_argument, NULL, L_UNTIL},
      {"limit", required_argument, NULL, L_LIMIT},
      {"page-token", required_argument, NULL, L_PAGE_TOKEN},
      {0, 0, 0, 0}};
  hc_delivery_filter f = {0};
  const char *arg;
  int c, first, rc = 0;
  while (rc == 0 && (c = hcli_next_option(g, &hcli_cmd_deliveries, argc, argv,
                                          own, &arg, &first)) != -1)
    rc = deliveries_option(g, &f, c, arg);
  if (rc != 0)
    return rc;
  if (first < argc)
    return hcli_usage_error(g, "unexpected argument '%s'", argv[first]);
  if ((f.key != NULL && *f.key == '\0') ||
      (f.handler_id != NULL && *f.handler_id == '\0'))
    return hcli_usage_error(g, "--key and --id must not be empty");
  if (f.since_ms > 0 && f.until_ms > 0 && f.since_ms >= f.until_ms)
    return hcli_usage_error(g, "--since must be before --until");

  hc_delivery_page *p = NULL;
  rc = hcli_call(g, deliveries_call, &f, &p);
  if (rc != 0)
    return rc;
  if (g->output == HCLI_OUT_JSON) {
    json_t *arr = json_array();
    for (size_t i = 0; i < p->count; i++)
      json_array_append_new(arr, delivery_json(&p->items[i]));
    hcli_json_print(json_pack("{s:o, s:o}", "deliveries", arr,
                              "next_page_token",
                              text_json(p->next_page_token)));
  } else {
    deliveries_print(p);
    /* On stderr: stdout stays the table, for grep and friends. */
    if (p->next_page_token[0] != '\0')
      fprintf(stderr, "handlerctl: more deliveries: --page-token %s\n",
              p->next_page_token);
  }
  hc_delivery_page_free(p);
  return HCLI_EXIT_OK;
}

/* ---- delivery ------------------------------------------------------------ */

static int run_delivery(hcli *g, int argc, char **argv);

const hcli_command hcli_cmd_delivery = {
    "delivery", "show one async delivery with its body and attempts",
    "usage: handlerctl delivery ID\n"
    "\n"
    "Shows delivery ID (GetDelivery): where it is, the request handlerd\n"
    "sends (the headers it sets for the event and the body; the webhook's\n"
    "own headers, the timestamp and the signature are added per attempt)\n"
    "and every attempt, oldest first, with the start of the receiver's\n"
    "answer. A body that is not text is shown as base64. NOT_FOUND (exit 1)\n"
    "when there is no such delivery.\n",
    run_delivery};

/* The start of a receiver's answer as one table cell (malloc'd): text cut
 * to about 60 characters, or base64 for bytes that are not text. */
static char *response_cell(const char *data, size_t len) {
  enum { MAX = 60 };
  char *out = NULL;
  if (len == 0)
    return strdup("-");
  if (!printable_text(data, len)) {
    char *b = hcli_base64_encode(data, len < MAX ? len : MAX);
    if (b == NULL ||
        asprintf(&out, "base64:%s%s", b, len > MAX ? "..." : "") < 0)
      out = NULL;
    free(b);
    return out;
  }
  size_t cut = len;
  if (cut > MAX) {
    cut = MAX;
    while (cut > 0 && ((unsigned char)data[cut] & 0xc0) == 0x80)
      cut--; /* not inside a UTF-8 sequence */
  }
  if (asprintf(&out, "%.*s%s", (int)cut, data, cut < len ? "..." : "") < 0)
    out = NULL;
  return out;
}

static void attempts_print(const hc_delivery_detail *d) {
  if (d->n_attempts == 0) {
    puts("(no attempts yet)");
    return;
  }
  static const char *const head[] = {"ATTEMPT", "STARTED", "DURATION",
                                     "HTTP",    "ERROR",   "RESPONSE"};
  hcli_table *t = hcli_table_new(6, head);
  for (size_t i = 0; i < d->n_attempts; i++) {
    const hc_delivery_attempt *a = &d->attempts[i];
    char number[32], started[40], dur[32], http[16];
    snprintf(number, sizeof number, "%u%s", a->number,
             a->manual ? " (manual)" : "");
    snprintf(dur, sizeof dur, "%lldms", (long long)a->duration_ms);
    snprintf(http, sizeof http, "%d", a->http_status);
    char *resp = response_cell(a->response_head, a->response_head_len);
    const char *row[] = {
        number,
        hcli_time_text(a->started_at_ms, started, sizeof started),
        dur,
        a->http_status > 0 ? http : "-",
        a->error[0] != '\0' ? a->error : "-",
        resp};
    hcli_table_add(t, row);
    free(resp);
  }
  hcli_table_print(t, stdout);
}

/* Prints `prefix` and `value` as one line; control characters in the value
 * (text from the server or a receiver) print as spaces, as in tables. */
static void line_print(const char *prefix, const char *value) {
  fputs(prefix, stdout);
  for (const char *p = value; *p; p++)
    putchar((unsigned char)*p < 0x20 || *p == 0x7f ? ' ' : *p);
  putchar('\n');
}

static void detail_print(const hc_delivery_detail *dd) {
  const hc_delivery *d = &dd->delivery;
  char attempts[16], created[40], next[40], last[600];
  snprintf(attempts, sizeof attempts, "%u", d->attempts);
  const char *fields[][2] = {
      {"delivery", d->delivery_id},
      {"event id", d->event_id},
      {"key", d->key},
      {"handler", d->handler_id},
      {"route", d->route[0] != '\0' ? d->route : "-"},
      {"event", d->event},
      {"ordering key", d->ordering_key[0] != '\0' ? d->ordering_key : "-"},
      {"state", hc_delivery_state_name(d->state)},
      {"attempts", attempts},
      {"created", hcli_time_text(d->created_at_ms, created, sizeof created)},
      {"next attempt",
       hcli_time_text(d->next_attempt_at_ms, next, sizeof next)},
      {"last", last_text(d, last, sizeof last)}};
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
    printf("%-14s", fields[i][0]);
    line_print("", fields[i][1]);
  }

  printf("\nheaders:\n");
  for (size_t i = 0; i < dd->n_headers; i++)
    line_print("  ", dd->headers[i]);
  if (dd->n_headers == 0)
    line_print("  ", "-");

  if (printable_text(dd->body, dd->body_len)) {
    printf("\nbody (%zu bytes):\n%s", dd->body_len, dd->body);
  } else {
    char *b = hcli_base64_encode(dd->body, dd->body_len);
    printf("\nbody (%zu bytes, base64):\n%s", dd->body_len, b ? b : "?");
    free(b);
  }
  if (dd->body_len == 0 || dd->body[dd->body_len - 1] != '\n')
    putchar('\n');
  putchar('\n');
  attempts_print(dd);
}

static json_t *detail_json(const hc_delivery_detail *dd) {
  json_t *o = json_object(), *headers = json_array(), *attempts = json_array();
  json_object_set_new(o, "delivery", delivery_json(&dd->delivery));
  for (size_t i = 0; i < dd->n_headers; i++)
    json_array_append_new(headers, text_json(dd->headers[i]));
  json_object_set_new(o, "headers", headers);
  bytes_json(o, "body", dd->body, dd->body_len);
  for (size_t i = 0; i < dd->n_attempts; i++) {
    const hc_delivery_attempt *a = &dd->attempts[i];
    json_t *x = json_pack("{s:i, s:b, s:I, s:I, s:i, s:o}", "number",
                          (int)a->number, "manual", a->manual, "started_at_ms",
                          (json_int_t)a->started_at_ms, "duration_ms",
                          (json_int_t)a->duration_ms, "http_status",
                          a->http_status, "error", text_json(a->error));
    bytes_json(x, "response_head", a->response_head, a->response_head_len);
    json_array_append_new(attempts, x);
  }
  json_object_set_new(o, "attempts", attempts);
  return o;
}

static hc_err delivery_call(hc_conn *conn, const void *in, void *out,
                            hc_status *st) {
  return hc_get_delivery(conn, in, 0, out, st);
}

static int run_delivery(hcli *g, int argc, char **argv) {
  static const struct option own[] = {{0, 0, 0, 0}};
  const char *arg;
  int first;
  while (hcli_next_option(g, &hcli_cmd_delivery, argc, argv, own, &arg,
                          &first) != -1)
    ;
  if (first >= argc || argv[first][0] == '\0')
    return hcli_usage_error(g, "missing the delivery id: handlerctl delivery "
                               "ID");
  if (first + 1 < argc)
    return hcli_usage_error(g, "unexpected argument '%s'", argv[first + 1]);

  hc_delivery_detail *d = NULL;
  int rc = hcli_call(g, delivery_call, argv[first], &d);
  if (rc != 0)
    return rc;
  if (g->output == HCLI_OUT_JSON)
    hcli_json_print(detail_json(d));
  else
    detail_print(d);
  hc_delivery_detail_free(d);
  return HCLI_EXIT_OK;
}
