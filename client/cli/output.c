/*
 * handlerctl: output formatting. Aligned text tables for people, one JSON
 * document (jansson) for programs; the same data in both.
 */
#include "cli.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* ---- tables -------------------------------------------------------------- */

struct hcli_table {
  size_t ncols, nrows, cap;
  char **cells; /* (nrows + 1) * ncols, row 0 the header */
};

static char *dup_cell(const char *s) {
  /* A cell is one line: control characters print as spaces. */
  char *d = strdup(s != NULL ? s : "");
  if (d != NULL)
    for (char *p = d; *p; p++)
      if ((unsigned char)*p < 0x20)
        *p = ' ';
  return d;
}

hcli_table *hcli_table_new(size_t ncols, const char *const *headers) {
  hcli_table *t = calloc(1, sizeof *t);
  if (t == NULL)
    return NULL;
  t->ncols = ncols;
  hcli_table_add(t, headers);
  t->nrows = 0; /* the header is not a row */
  return t;
}

void hcli_table_add(hcli_table *t, const char *const *cells) {
  if (t == NULL)
    return;
  size_t used = (t->nrows + (t->cells != NULL ? 1 : 0)) * t->ncols;
  if (used + t->ncols > t->cap) {
    size_t cap = t->cap ? t->cap * 2 : t->ncols * 8;
    while (cap < used + t->ncols)
      cap *= 2;
    char **cells2 = realloc(t->cells, cap * sizeof *cells2);
    if (cells2 == NULL)
      return;
    t->cells = cells2;
    t->cap = cap;
  }
  for (size_t i = 0; i < t->ncols; i++)
    t->cells[used + i] = dup_cell(cells[i]);
  if (used > 0)
    t->nrows++;
}

size_t hcli_table_rows(const hcli_table *t) {
  return t != NULL ? t->nrows : 0;
}

/* Display width: UTF-8 code points (continuation bytes do not count). */
static size_t width(const char *s) {
  size_t w = 0;
  for (; s != NULL && *s; s++)
    w += ((unsigned char)*s & 0xc0) != 0x80;
  return w;
}

void hcli_table_print(hcli_table *t, FILE *f) {
  if (t == NULL)
    return;
  size_t rows = t->nrows + 1;
  size_t *w = calloc(t->ncols, sizeof *w);
  for (size_t r = 0; w != NULL && r < rows; r++)
    for (size_t c = 0; c < t->ncols; c++) {
      size_t cw = width(t->cells[r * t->ncols + c]);
      if (cw > w[c])
        w[c] = cw;
    }
  for (size_t r = 0; r < rows; r++) {
    for (size_t c = 0; c < t->ncols; c++) {
      const char *cell = t->cells[r * t->ncols + c];
      fputs(cell != NULL ? cell : "", f);
      if (c + 1 < t->ncols && w != NULL)
        fprintf(f, "%*s", (int)(w[c] - width(cell) + 2), "");
    }
    fputc('\n', f);
  }
  for (size_t i = 0; i < rows * t->ncols; i++)
    free(t->cells[i]);
  free(t->cells);
  free(w);
  free(t);
}

/* ---- JSON ---------------------------------------------------------------- */

void hcli_json_print(json_t *doc) {
  if (doc == NULL) {
    fputs("null\n", stdout);
    return;
  }
  json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_ENCODE_ANY);
  fputc('\n', stdout);
  json_decref(doc);
}

/* ---- values -------------------------------------------------------------- */

json_t *hcli_value_json(const hc_value *v) {
  json_t *value = NULL;
  switch (v->type) {
  case HC_VALUE_NONE:
    return json_null();
  case HC_VALUE_JSON:
    value = json_loadb(v->data, v->len ? v->len : strlen(v->data),
                       JSON_DECODE_ANY, NULL);
    if (value == NULL) /* not JSON after all: show the text */
      value = json_string(v->data);
    break;
  case HC_VALUE_STRING:
    value = json_stringn(v->data, v->len ? v->len : strlen(v->data));
    break;
  case HC_VALUE_INT64:
    value = json_integer((json_int_t)v->i64);
    break;
  case HC_VALUE_DOUBLE:
    value = json_real(v->f64);
    break;
  case HC_VALUE_BINARY:
  case HC_VALUE_RECORD_V2: {
    char *b = hcli_base64_encode(v->data, v->len);
    value = json_string(b != NULL ? b : "");
    free(b);
    break;
  }
  }
  return json_pack("{s:s, s:o}", "type", hcli_value_type_name(v->type), "value",
                   value != NULL ? value : json_null());
}

char *hcli_value_text(const hc_value *v) {
  char *s = NULL;
  switch (v->type) {
  case HC_VALUE_NONE:
    return strdup("-");
  case HC_VALUE_JSON: {
    /* One line as the handler wrote it; multi-line JSON is compacted. */
    if (strpbrk(v->data, "\r\n") == NULL)
      return strdup(v->data);
    json_t *j = json_loadb(v->data, v->len ? v->len : strlen(v->data),
                           JSON_DECODE_ANY, NULL);
    s = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    return s != NULL ? s : strdup(v->data);
  }
  case HC_VALUE_STRING:
    return strdup(v->data);
  case HC_VALUE_INT64:
    if (asprintf(&s, "%" PRId64, v->i64) < 0)
      s = NULL;
    return s;
  case HC_VALUE_DOUBLE:
    if (asprintf(&s, "%.17g", v->f64) < 0)
      s = NULL;
    return s;
  case HC_VALUE_BINARY:
  case HC_VALUE_RECORD_V2: {
    char *b = hcli_base64_encode(v->data, v->len);
    if (b == NULL || asprintf(&s, "base64:%s", b) < 0)
      s = NULL;
    free(b);
    return s;
  }
  }
  return strdup("?");
}

/* ---- results ------------------------------------------------------------- */

json_t *hcli_results_json(const hc_results *r) {
  json_t *arr = json_array();
  for (size_t i = 0; r != NULL && i < r->count; i++) {
    const hc_result *x = &r->items[i];
    json_t *o = json_pack(
        "{s:s, s:b, s:o, s:I, s:b}", "handler_id", x->handler_id, "ok", x->ok,
        "value", hcli_value_json(&x->value), "duration_ns",
        (json_int_t)x->duration_ns, "truncated", x->truncated);
    json_object_set_new(o, "accepted", json_boolean(x->accepted));
    if (x->accepted)
      json_object_set_new(o, "delivery_id", json_string(x->delivery_id));
    if (!x->ok)
      json_object_set_new(o, "error",
                          json_pack("{s:i, s:s, s:s, s:i, s:i}", "code",
                                    x->error_code, "code_name",
                                    hc_status_code_name(x->error_code),
                                    "message", x->error_message, "http_status",
                                    x->http_status, "attempts", x->attempts));
    json_array_append_new(arr, o);
  }
  return json_pack("{s:o}", "results", arr);
}

/* "1.234ms" and so on, in a caller's buffer. */
static const char *duration_text(int64_t ns, char *buf, size_t size) {
  if (ns < 1000)
    snprintf(buf, size, "%" PRId64 "ns", ns);
  else if (ns < 1000000)
    snprintf(buf, size, "%.1fus", (double)ns / 1e3);
  else if (ns < 1000000000)
    snprintf(buf, size, "%.3fms", (double)ns / 1e6);
  else
    snprintf(buf, size, "%.3fs", (double)ns / 1e9);
  return buf;
}

void hcli_results_print(const hc_results *r) {
  if (r == NULL || r->count == 0) {
    puts("(no handler produced a result)");
    return;
  }
  static const char *const head[] = {"HANDLER", "OK", "DURATION", "RESULT"};
  hcli_table *t = hcli_table_new(4, head);
  for (size_t i = 0; i < r->count; i++) {
    const hc_result *x = &r->items[i];
    char dur[32], *text = NULL;
    if (x->ok && x->accepted) {
      /* Stored for delivery out of band: no value yet, only its id. */
      if (asprintf(&text, "delivery %s", x->delivery_id) < 0)
        text = NULL;
    } else if (x->ok) {
      char *v = hcli_value_text(&x->value);
      if (v != NULL && x->truncated && asprintf(&text, "%s (truncated)", v) < 0)
        text = NULL;
      if (text == NULL) {
        text = v;
        v = NULL;
      }
      free(v);
    } else {
      char extra[96] = "";
      if (x->http_status > 0)
        snprintf(extra, sizeof extra, " (http %d, %d attempt%s)",
                 x->http_status, x->attempts, x->attempts == 1 ? "" : "s");
      else if (x->attempts > 0 && strstr(x->error_message, "attempt") == NULL)
        snprintf(extra, sizeof extra, " (%d attempt%s)", x->attempts,
                 x->attempts == 1 ? "" : "s");
      if (asprintf(&text, "%s: %s%s", hc_status_code_name(x->error_code),
                   x->error_message, extra) < 0)
        text = NULL;
    }
    const char *row[] = {x->handler_id,
                         !x->ok        ? "FAILED"
                         : x->accepted ? "accepted"
                                       : "ok",
                         duration_text(x->duration_ns, dur, sizeof dur), text};
    hcli_table_add(t, row);
    free(text);
  }
  hcli_table_print(t, stdout);
}

/* ---- handler lists ------------------------------------------------------- */

const char *hcli_kind_name(hc_handler_kind k) {
  switch (k) {
  case HC_KIND_SIMPLE:
    return "simple";
  case HC_KIND_EVENT_STREAM:
    return "event-stream";
  default:
    return "unspecified";
  }
}

json_t *hcli_list_json(const hc_handler_list *l) {
  json_t *arr = json_array();
  for (size_t i = 0; l != NULL && i < l->count; i++) {
    const hc_handler_info *h = &l->items[i];
    json_t *routes = json_object(), *events = json_array();
    json_t *disabled = json_array();
    for (size_t j = 0; j < h->n_disabled; j++)
      json_array_append_new(disabled, json_string(h->disabled[j]));
    for (size_t j = 0; j < h->n_routes; j++)
      json_object_set_new(routes, h->routes[j].event,
                          json_string(h->routes[j].target));
    for (size_t j = 0; j < h->n_events; j++)
      json_array_append_new(events, json_string(h->events[j]));
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:s, s:o, s:o, s:b, s:b, s:o}", "key", h->key,
        "handler_id", h->handler_id, "kind", hcli_kind_name(h->kind), "target",
        h->target, "routes", routes, "events", events, "secret_set",
        h->secret_set, "async", h->async, "disabled", disabled);
    json_object_set_new(o, "selector",
                        json_string(h->selector ? h->selector : ""));
    json_object_set_new(o, "derive_old_value",
                        json_boolean(h->derive_old_value));
    json_array_append_new(arr, o);
  }
  return json_pack("{s:o}", "handlers", arr);
}

/* Joins strings with `sep` (malloc'd; "" for none). */
static char *join(char **items, size_t n, const char *sep) {
  size_t len = 1;
  for (size_t i = 0; i < n; i++)
    len += strlen(items[i]) + strlen(sep);
  char *s = malloc(len);
  if (s == NULL)
    return NULL;
  s[0] = '\0';
  for (size_t i = 0; i < n; i++) {
    if (i > 0)
      strcat(s, sep);
    strcat(s, items[i]);
  }
  return s;
}

void hcli_list_print(const hc_handler_list *l) {
  if (l == NULL || l->count == 0) {
    puts("(no handlers registered)");
    return;
  }
  /* The ASYNC, OLD VALUE and SELECTOR columns only when some handler has
   * them, so the listing of a service without them looks as it always
   * did. */
  int any_async = 0, any_derive = 0, any_selector = 0;
  for (size_t i = 0; i < l->count; i++) {
    const hc_handler_info *h = &l->items[i];
    any_async |= h->async || h->n_disabled > 0;
    any_derive |= h->derive_old_value;
    any_selector |= h->selector != NULL && h->selector[0] != '\0';
  }
  const char *head[9] = {"KEY",    "HANDLER", "KIND",
                         "TARGET", "EVENTS",  "SECRET"};
  size_t ncols = 6, col_async = 0, col_derive = 0, col_selector = 0;
  if (any_async)
    head[col_async = ncols++] = "ASYNC";
  if (any_derive)
    head[col_derive = ncols++] = "OLD VALUE";
  if (any_selector)
    head[col_selector = ncols++] = "SELECTOR";
  hcli_table *t = hcli_table_new(ncols, head);
  for (size_t i = 0; i < l->count; i++) {
    const hc_handler_info *h = &l->items[i];
    char *target = NULL, *events = NULL, *async = NULL, *off = NULL;
    if (h->kind == HC_KIND_EVENT_STREAM) {
      char **parts = calloc(h->n_routes + 1, sizeof *parts);
      size_t n = 0;
      for (size_t j = 0; parts != NULL && j < h->n_routes; j++)
        if (asprintf(&parts[n], "%s=%s", h->routes[j].event,
                     h->routes[j].target) >= 0)
          n++;
      target = parts != NULL ? join(parts, n, ", ") : NULL;
      for (size_t j = 0; j < n; j++)
        free(parts[j]);
      free(parts);
    } else {
      target = strdup(h->target);
    }
    events = h->n_events > 0 ? join(h->events, h->n_events, ",") : NULL;
    const char *row[] = {h->key,
                         h->handler_id,
                         hcli_kind_name(h->kind),
                         target,
                         events != NULL                    ? events
                         : h->kind == HC_KIND_EVENT_STREAM ? "-"
                                                           : "*",
                         h->secret_set ? "yes" : "-",
                         NULL,
                         NULL,
                         NULL};
    if (h->n_disabled > 0) {
      off = join(h->disabled, h->n_disabled, ", ");
      if (off == NULL || asprintf(&async, "DISABLED: %s", off) < 0)
        async = NULL;
    }
    if (any_async)
      row[col_async] = async != NULL ? async : h->async ? "yes" : "-";
    if (any_derive)
      row[col_derive] = h->derive_old_value ? "derived" : "-";
    if (any_selector)
      row[col_selector] =
          h->selector != NULL && h->selector[0] != '\0' ? h->selector : "-";
    hcli_table_add(t, row);
    free(target);
    free(events);
    free(async);
    free(off);
  }
  hcli_table_print(t, stdout);
}
