/*
 * fuzz_event_json: arbitrary event args -> the JSON webhooks receive. The
 * event is built straight from the input bytes (not through validation, so
 * every field can hold anything: invalid UTF-8, NUL bytes in values, NULL
 * strings, unknown enum numbers, NaN and infinities, JSON that does not
 * parse) and goes through
 *   hd_event_to_json           (echo, log, binary-mode body),
 *   hd_ce_structured           (structured-mode body),
 *   hd_ce_binary_data,
 *   hd_ce_binary_headers       (binary mode's ce-* headers),
 * all from cloudevents.h, the CloudEvents HTTP binding the webhook kind
 * uses.
 * The output must always parse as JSON (jansson json_loads, else abort();
 * with JSON_ALLOW_NUL, since "\u0000" is valid JSON and handlerd accepts
 * it in JSON values on purpose: see event.c check_value),
 * the CloudEvent must carry the same data object, subject and type, a deep
 * copy must print the same, and no header line may carry a control byte.
 */
#include "cloudevents.h"
#include "event_json.h"
#include "fuzz_util.h"
#include "handlerd/handlerd.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ALLOCS 64

typedef struct pool {
  void *p[MAX_ALLOCS];
  size_t n;
} pool;

/* A NUL-terminated copy of up to `max` input bytes (may hold NULs). */
static char *take(fz *f, pool *pl, size_t max, size_t *len_out) {
  size_t len;
  const uint8_t *b = fz_bytes(f, max, &len);
  if (pl->n == MAX_ALLOCS)
    return NULL;
  char *s = malloc(len + 1);
  FUZZ_CHECK(s != NULL);
  memcpy(s, b, len);
  s[len] = '\0';
  pl->p[pl->n++] = s;
  if (len_out)
    *len_out = len;
  return s;
}

/* A C string, or NULL now and then. */
static const char *take_str(fz *f, pool *pl, uint8_t flags, int bit) {
  if (flags & (1u << bit))
    return NULL;
  return take(f, pl, 2048, NULL);
}

static void take_value(fz *f, pool *pl, hd_value *v) {
  uint8_t t = fz_u8(f);
  memset(v, 0, sizeof(*v));
  v->type = (hd_value_type)(t % 8); /* 7: a type this version does not know */
  switch (v->type) {
  case HD_VALUE_INT64:
    v->u.i64 = (int64_t)fz_u64(f);
    break;
  case HD_VALUE_DOUBLE: {
    uint64_t bits = fz_u64(f);
    memcpy(&v->u.f64, &bits, sizeof(bits));
    break;
  }
  case HD_VALUE_NONE:
    break;
  default: {
    size_t len = 0;
    v->u.bytes.data = take(f, pl, 4096, &len);
    v->u.bytes.len = len;
    if (t & 0x80) /* NULL data with a length: must not be read */
      v->u.bytes.data = NULL;
    break;
  }
  }
}

static int is_utf8(const char *s) {
  json_t *j = json_string(s);
  json_decref(j);
  return j != NULL;
}

static json_t *parse(const char *text) {
  FUZZ_CHECK(text != NULL);
  json_error_t je;
  json_t *j = json_loads(text, JSON_ALLOW_NUL, &je);
  if (!j)
    fprintf(stderr, "output does not parse as JSON (%s): %s\n", je.text, text);
  FUZZ_CHECK(j != NULL);
  return j;
}

static void check_header_lines(char *const *lines, size_t n, int has_subject) {
  int subject = 0;
  for (size_t i = 0; i < n; i++) {
    const char *h = lines[i];
    FUZZ_CHECK(h != NULL);
    const char *colon = strchr(h, ':');
    FUZZ_CHECK(colon != NULL);
    for (const unsigned char *p = (const unsigned char *)h; *p; p++)
      FUZZ_CHECK(*p >= 0x20 && *p < 0x7f);
    if (strncmp(h, "ce-", 3) == 0) {
      FUZZ_CHECK(colon[1] == ' ');
      for (const char *p = colon + 2; *p; p++)
        FUZZ_CHECK(*p != ' ' && *p != '"');
    }
    subject += strncmp(h, "ce-subject: ", 12) == 0;
  }
  FUZZ_CHECK(subject == has_subject);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz f = {data, size};
  pool pl = {{0}, 0};
  hd_property props[8];
  hd_event ev;
  memset(&ev, 0, sizeof(ev));

  uint8_t nulls = fz_u8(&f); /* which strings are NULL */
  uint8_t kind = fz_u8(&f);
  ev.args_kind = (hd_args_kind)(kind % 6);
  ev.key = take_str(&f, &pl, nulls, 0);
  ev.name = take_str(&f, &pl, nulls, 1);
  switch (ev.args_kind) {
  case HD_ARGS_SUBSCRIBE:
  case HD_ARGS_UPDATE:
  case HD_ARGS_UNSUBSCRIBE: {
    ev.topic.path = take_str(&f, &pl, nulls, 2);
    take_value(&f, &pl, &ev.topic.value);
    take_value(&f, &pl, &ev.topic.old_value);
    uint8_t spec = fz_u8(&f);
    ev.topic.has_spec = spec & 1;
    ev.topic.type =
        (hd_topic_type)(spec & 2 ? (int32_t)fz_u32(&f) : (int)(spec >> 2) % 9);
    ev.topic.reason =
        (hd_unsubscribe_reason)(spec & 0x80 ? (int32_t)fz_u32(&f)
                                            : (int)(spec >> 3) % 8);
    size_t n = fz_u8(&f) % 9;
    for (size_t i = 0; i < n; i++) {
      uint8_t pn = fz_u8(&f);
      props[i].name = take_str(&f, &pl, pn, 0);
      props[i].value = take_str(&f, &pl, pn, 1);
    }
    ev.topic.n_properties = n;
    ev.topic.properties = n ? props : NULL;
    break;
  }
  case HD_ARGS_ERROR:
    ev.error.code = (int32_t)fz_u32(&f);
    ev.error.description = take_str(&f, &pl, nulls, 2);
    break;
  case HD_ARGS_RESPONSE:
    ev.response.conversation_id = take_str(&f, &pl, nulls, 2);
    ev.response.sender_session_id = take_str(&f, &pl, nulls, 3);
    ev.response.path = take_str(&f, &pl, nulls, 4);
    ev.response.expected = (int32_t)fz_u32(&f);
    ev.response.received = (int32_t)fz_u32(&f);
    take_value(&f, &pl, &ev.response.response);
    break;
  default:
    break;
  }
  int64_t when = (int64_t)fz_u64(&f);
  const char *meta_id = take_str(&f, &pl, nulls, 5);
  const char *meta_source = take_str(&f, &pl, nulls, 6);

  /* The event's JSON. */
  char *text = hd_event_to_json(&ev);
  json_t *obj = parse(text);
  FUZZ_CHECK(json_is_object(obj));
  FUZZ_CHECK(json_is_string(json_object_get(obj, "key")));
  FUZZ_CHECK(json_is_string(json_object_get(obj, "event")));
  char *bin = hd_ce_binary_data(&ev);
  FUZZ_CHECK(bin != NULL && strcmp(bin, text) == 0);
  free(bin);

  /* A deep copy prints the same. */
  hd_event *copy = hd_event_copy(&ev);
  FUZZ_CHECK(copy != NULL);
  char *text2 = hd_event_to_json(copy);
  FUZZ_CHECK(text2 != NULL);
  if (strcmp(text, text2) != 0)
    fprintf(stderr, "copy differs:\n%s\n%s\n", text, text2);
  FUZZ_CHECK(strcmp(text, text2) == 0);
  free(text2);
  hd_event_free(copy);

  /* Structured mode, as the webhook kind builds it: a uuid, the source from
   * hd_ce_source, and the fuzzed time; then with fuzzed id and source. */
  char *source = hd_ce_source("fuzz", ev.key ? ev.key : "");
  FUZZ_CHECK(source != NULL);
  hd_ce_meta meta = {"0b7d5b4c-6c1e-4c55-9a55-1f1a8f7b2a10", source, when};
  char *ce_text = hd_ce_body(&ev, &meta, 0);
  json_t *ce = parse(ce_text);
  FUZZ_CHECK(json_equal(json_object_get(ce, "data"), obj));
  FUZZ_CHECK(strcmp(json_string_value(json_object_get(ce, "specversion")),
                    "1.0") == 0);
  FUZZ_CHECK(strcmp(json_string_value(json_object_get(ce, "source")), source) ==
             0);
  const char *type = json_string_value(json_object_get(ce, "type"));
  const char *name = json_string_value(json_object_get(obj, "event"));
  FUZZ_CHECK(type && strncmp(type, "handlers.v1.", 12) == 0 &&
             strcmp(type + 12, name) == 0);
  json_t *subject = json_object_get(ce, "subject");
  const char *path = hd_ce_subject(&ev);
  FUZZ_CHECK((subject != NULL) == (path != NULL));
  if (subject)
    FUZZ_CHECK(json_equal(subject,
                          json_object_get(obj, ev.args_kind == HD_ARGS_RESPONSE
                                                   ? "path"
                                                   : "topicPath")));
  json_decref(ce);
  free(ce_text);

  hd_ce_meta fmeta = {meta_id, meta_source, when};
  ce_text = hd_ce_structured(&ev, &fmeta);
  if ((!meta_id || is_utf8(meta_id)) && (!meta_source || is_utf8(meta_source)))
    FUZZ_CHECK(ce_text != NULL);
  if (ce_text) {
    json_decref(parse(ce_text));
    free(ce_text);
  }

  /* Binary mode: the body is the data, the attributes go in headers. */
  char *body = hd_ce_body(&ev, &meta, 1);
  FUZZ_CHECK(body != NULL && strcmp(body, text) == 0);
  free(body);
  char *lines[1 + HD_CE_BINARY_HEADERS_MAX];
  lines[0] = strdup(hd_ce_content_type_line(1));
  size_t n = 1 + hd_ce_binary_headers(&ev, &meta, lines + 1);
  FUZZ_CHECK(n <= 1 + HD_CE_BINARY_HEADERS_MAX);
  check_header_lines(lines, n, path != NULL);
  for (size_t i = 0; i < n; i++)
    free(lines[i]);

  free(source);
  json_decref(obj);
  free(text);
  for (size_t i = 0; i < pl.n; i++)
    free(pl.p[i]);
  return 0;
}
