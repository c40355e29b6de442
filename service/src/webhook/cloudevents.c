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

/* The topic path the event is about, as a JSON string from `data`, or NULL
 * when it has none: error and custom events without args carry no path,
 * and an empty path is no subject either. */
static json_t *subject_of(const hd_event *ev, json_t *data) {
  const char *field;
  const char *raw;

  switch (ev->args_kind) {
  case HD_ARGS_SUBSCRIBE:
  case HD_ARGS_UPDATE:
  case HD_ARGS_UNSUBSCRIBE:
    field = "topicPath";
    raw = ev->topic.path;
    break;
  case HD_ARGS_RESPONSE:
    field = "path";
    raw = ev->response.path;
    break;
  default:
    return NULL;
  }
  if (!raw || !*raw)
    return NULL;
  return json_object_get(data, field);
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
