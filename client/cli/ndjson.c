/*
 * ndjson.c - handlerctl's NDJSON event input and the record of a run's
 * failures (see ndjson.h).
 */
#include "ndjson.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- failures ------------------------------------------------------------ */

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

void hcli_ndjson_failed(hcli_ndjson_failures *f, size_t line, const char *code,
                        const char *message) {
  f->failed++;
  if (f->print_to != NULL) {
    /* "\r\033[K" first: the line replaces the progress line, which the
     * next update redraws below it. */
    if (f->printed < HCLI_NDJSON_MAX_PRINTED)
      fprintf(f->print_to, "%shandlerctl: line %zu: %s: %s\n",
              f->progress ? "\r\033[K" : "", line, code, message);
    else if (f->printed == HCLI_NDJSON_MAX_PRINTED)
      fprintf(f->print_to, "%shandlerctl: more failures not shown\n",
              f->progress ? "\r\033[K" : "");
  }
  f->printed++;
  if (f->errors != NULL &&
      json_array_size(f->errors) < HCLI_NDJSON_MAX_JSON_ERRORS)
    json_array_append_new(
        f->errors, json_pack("{s:I, s:s, s:o}", "line", (json_int_t)line,
                             "code", code, "message", utf8_string(message)));
}

/* ---- one line -> one event ----------------------------------------------- */

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
        json_object_size(props_j) > HCLI_NDJSON_MAX_PROPERTIES) {
      snprintf(err, size,
               "\"properties\" must be an object of at most %d "
               "strings",
               HCLI_NDJSON_MAX_PROPERTIES);
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

/* ---- the reader ---------------------------------------------------------- */

void hcli_ndjson_init(hcli_ndjson_reader *rd, FILE *in, const char *default_key,
                      hcli_ndjson_failures *failures) {
  memset(rd, 0, sizeof *rd);
  rd->in = in;
  rd->default_key = default_key;
  rd->failures = failures;
}

/* Drops what the last event borrowed. */
static void release_line(hcli_ndjson_reader *rd) {
  json_decref(rd->obj);
  rd->obj = NULL;
  hcli_pool_clear(&rd->pool);
}

int hcli_ndjson_next(hcli_ndjson_reader *rd, hc_event *ev) {
  ssize_t n;

  release_line(rd);
  while ((n = getline(&rd->buf, &rd->bufsize, rd->in)) != -1) {
    char *buf = rd->buf;
    rd->line++;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
      buf[--n] = '\0';
    if (strspn(buf, " \t") == (size_t)n)
      continue; /* blank line */
    char err[300] = "";
    json_error_t je;
    rd->obj = json_loadb(buf, (size_t)n, 0, &je);
    if (rd->obj == NULL)
      snprintf(err, sizeof err, "invalid JSON: %s (column %d)", je.text,
               je.column);
    else if (!json_is_object(rd->obj))
      snprintf(err, sizeof err, "not a JSON object");
    else if (event_from_json(rd->obj, rd->default_key, ev, rd->props, &rd->pool,
                             err, sizeof err) == 0)
      return 1;
    release_line(rd);
    rd->bad_lines++;
    hcli_ndjson_failed(rd->failures, rd->line, "BAD_LINE", err);
    return 0;
  }
  return -1;
}

void hcli_ndjson_free(hcli_ndjson_reader *rd) {
  release_line(rd);
  free(rd->buf);
  free(rd->pool.items);
  rd->buf = NULL;
  rd->bufsize = 0;
  memset(&rd->pool, 0, sizeof rd->pool);
}
