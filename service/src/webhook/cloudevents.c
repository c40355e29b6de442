/*
 * CloudEvents 1.0 for webhook bodies, in the JSON event format
 * (structured mode) and as a bare data body (binary mode).
 *
 * The attributes that come from the event (type, subject) are taken from the
 * object hd_event_to_json() built rather than from the raw event, because
 * that code already turns text that is not UTF-8 into valid JSON strings;
 * going to the raw bytes again would need a second repair.
 */
#include "cloudevents.h"
#include "event_json.h"

#include <jansson.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define CE_TYPE_PREFIX "handlers.v1."

void hd_ce_type(const hd_event *ev, char *out, size_t out_size) {
  if (out_size == 0)
    return;
  snprintf(out, out_size, CE_TYPE_PREFIX "%s", ev && ev->name ? ev->name : "");
}

void hd_ce_time(int64_t time_ns, char *out, size_t out_size) {
  /* Floor division, so times before 1970 still get 0..999999 us. */
  int64_t sec = time_ns / 1000000000, ns = time_ns % 1000000000;
  struct tm tm;

  if (out_size == 0)
    return;
  if (ns < 0) {
    ns += 1000000000;
    sec--;
  }
  time_t t = (time_t)sec;
  if (!gmtime_r(&t, &tm)) {
    out[0] = '\0';
    return;
  }
  snprintf(out, out_size, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
           tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
           tm.tm_sec, (int)(ns / 1000));
}

/* The event's data object, as hd_event_to_json prints it; NULL on ENOMEM.
 * Built as an object so the envelope embeds it without a text round trip. */
static json_t *data_object(const hd_event *ev) {
  return hd_event_json_object(ev);
}

const char *hd_ce_subject(const hd_event *ev) {
  return hd_event_topic_path(ev);
}

/* The subject as a JSON string from `data` (already repaired to UTF-8 by
 * hd_event_json_object), or NULL when the event has none: error and custom
 * events without args carry no path, and an empty path is no subject
 * either. */
static json_t *subject_of(const hd_event *ev, json_t *data) {
  if (hd_ce_subject(ev) == NULL)
    return NULL;
  return json_object_get(data, ev->args_kind == HD_ARGS_RESPONSE ? "path"
                                                                 : "topicPath");
}

/* obj[name] = v, taking v; -1 when v is NULL (ENOMEM, or not UTF-8). */
static int set(json_t *obj, const char *name, json_t *v) {
  return json_object_set_new(obj, name, v);
}

char *hd_ce_structured(const hd_event *ev, const hd_ce_meta *meta) {
  char when[40];
  char *text = NULL;

  if (!ev || !meta)
    return NULL;
  json_t *data = data_object(ev);
  json_t *ce = json_object();
  if (!data || !ce)
    goto out;
  hd_ce_time(meta->time_ns, when, sizeof when);
  json_t *subject = subject_of(ev, data);
  json_t *name = json_object_get(data, "event");

  /* Attribute order follows the spec's examples, which helps people reading
   * raw bodies; receivers must not depend on it. */
  if (set(ce, "specversion", json_string("1.0")) ||
      set(ce, "id", json_string(meta->id ? meta->id : "")) ||
      set(ce, "source", json_string(meta->source ? meta->source : "")) ||
      set(ce, "type",
          json_sprintf(CE_TYPE_PREFIX "%s",
                       name ? json_string_value(name) : "")) ||
      (subject && json_object_set(ce, "subject", subject)) ||
      set(ce, "time", json_string(when)) ||
      set(ce, "datacontenttype", json_string("application/json")) ||
      json_object_set(ce, "data", data))
    goto out;
  text = json_dumps(ce, JSON_COMPACT);
out:
  json_decref(ce);
  json_decref(data);
  return text;
}

char *hd_ce_binary_data(const hd_event *ev) {
  return ev ? hd_event_to_json(ev) : NULL;
}

char *hd_ce_body(const hd_event *ev, const hd_ce_meta *meta, int binary_mode) {
  return binary_mode ? hd_ce_binary_data(ev) : hd_ce_structured(ev, meta);
}

/* ---- the HTTP binding's headers ----------------------------------------- */

/* Appends `s` to `out` (room for 3 * strlen + 1), percent-encoding every
 * byte for which keep() is 0. */
static void percent_encode(char *out, const char *s, int (*keep)(int c)) {
  static const char hex[] = "0123456789ABCDEF";
  char *o = out + strlen(out);

  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (keep(*p)) {
      *o++ = (char)*p;
    } else {
      *o++ = '%';
      *o++ = hex[*p >> 4];
      *o++ = hex[*p & 0xf];
    }
  }
  *o = '\0';
}

/* CloudEvents HTTP binding, 3.1.3.2: printable ASCII except space, '"' and
 * '%' goes as is. */
static int ce_header_keep(int c) {
  return c > 0x20 && c < 0x7f && c != '"' && c != '%';
}

/* RFC 3986 pchar (and '/'): what a URI-reference path keeps. */
static int uri_path_keep(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || strchr("-._~!$&'()*+,;=:@/", c) != NULL;
}

/* "name: value", value percent-encoded as a ce-* header; NULL on ENOMEM. */
static char *ce_header(const char *name, const char *value) {
  size_t n = strlen(name), len = n + 2 + 3 * strlen(value) + 1;
  char *line = malloc(len);

  if (line == NULL)
    return NULL;
  snprintf(line, len, "%s: ", name);
  percent_encode(line, value, ce_header_keep);
  return line;
}

char *hd_ce_source(const char *instance, const char *key) {
  size_t len =
      sizeof("//handlerd//keys/") + 3 * (strlen(instance) + strlen(key));
  char *s = malloc(len);

  if (s == NULL)
    return NULL;
  strcpy(s, "//handlerd/");
  percent_encode(s, instance, uri_path_keep);
  strcat(s, "/keys/");
  percent_encode(s, key, uri_path_keep);
  return s;
}

const char *hd_ce_content_type_line(int binary_mode) {
  return binary_mode ? "content-type: application/json"
                     : "content-type: application/cloudevents+json";
}

size_t hd_ce_binary_headers(const hd_event *ev, const hd_ce_meta *meta,
                            char **out) {
  char type[HD_EVENT_NAME_MAX + 32], when[40];
  const char *subject = hd_ce_subject(ev);
  size_t n = 0;

  hd_ce_type(ev, type, sizeof(type));
  hd_ce_time(meta->time_ns, when, sizeof(when));
  out[n++] = strdup("ce-specversion: 1.0");
  out[n++] = ce_header("ce-id", meta->id ? meta->id : "");
  out[n++] = ce_header("ce-source", meta->source ? meta->source : "");
  out[n++] = ce_header("ce-type", type);
  if (subject != NULL)
    out[n++] = ce_header("ce-subject", subject);
  out[n++] = ce_header("ce-time", when);
  return n;
}

void hd_ce_new_id(char out[37]) {
  unsigned char b[16];

  /* getrandom() first: it cannot fail once the pool is seeded and needs no
   * library state; RAND_bytes when the syscall is missing or interrupted. */
  if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b &&
      RAND_bytes(b, sizeof b) != 1) {
    /* No entropy source at all. The id must still be unique per event and
     * uuid-shaped, and the clock's nanoseconds keep it unique in practice. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    memcpy(b, &ts, sizeof ts < sizeof b ? sizeof ts : sizeof b);
  }
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
  snprintf(out, 37,
           "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
           "%02x%02x%02x%02x%02x%02x",
           b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10],
           b[11], b[12], b[13], b[14], b[15]);
}
