/*
 * The built-in functions AddHandler can name as a local target:
 *   log        appends each event as one JSON line to a file (or stdout);
 *   count      counts events per (key, event name), per handler;
 *   last_value remembers the last value seen per topic path, per handler;
 *   echo       returns the event as JSON.
 * "Per handler" state comes from instance_new, so two handlers made from
 * `count` count independently.
 */
#include "handlerd/handlerd.h"

#include "functions_internal.h"
#include "strmap.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- log --------------------------------------------------------------- */

/* One sink shared by every log handler: the lock keeps lines whole. */
struct log_sink {
  pthread_mutex_t mu;
  FILE *f;
  int owned; /* opened here, so closed here; stdout is not */
};

static void log_sink_free(void *p) {
  struct log_sink *s = p;
  if (s->owned)
    fclose(s->f);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

static hd_err log_fn(const hd_event *ev, void *user_data, hd_result *out) {
  struct log_sink *s = user_data;
  char *line = hd_event_to_json(ev);
  if (!line) {
    hd_result_set_error(out, HD_ENOMEM, "log: out of memory");
    return HD_ENOMEM;
  }
  pthread_mutex_lock(&s->mu);
  /* Flush per line: a reader tailing the file sees each event as it comes,
   * and a crash loses nothing already handled. */
  int ok =
      fputs(line, s->f) >= 0 && putc('\n', s->f) != EOF && fflush(s->f) == 0;
  int e = errno;
  if (!ok)
    clearerr(s->f); /* let the next event try again */
  pthread_mutex_unlock(&s->mu);
  free(line);
  if (!ok) {
    hd_result_set_error(out, HD_EIO, "log: cannot write: %s", strerror(e));
    return HD_EIO;
  }
  return HD_OK;
}

/* ---- count ------------------------------------------------------------- */

struct counter {
  pthread_mutex_t mu;
  hd_strmap *counts; /* key "\0" event name -> int64_t */
};

static hd_err counter_new(void *user_data, void **instance) {
  (void)user_data;
  struct counter *c = calloc(1, sizeof *c);
  if (!c || !(c->counts = hd_strmap_new(free))) {
    free(c);
    return HD_ENOMEM;
  }
  pthread_mutex_init(&c->mu, NULL);
  *instance = c;
  return HD_OK;
}

static void counter_free(void *instance) {
  struct counter *c = instance;
  hd_strmap_free(c->counts);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

static hd_err count_fn(const hd_event *ev, void *user_data, hd_result *out) {
  struct counter *c = user_data;
  const char *key = ev->key ? ev->key : "";
  const char *name = ev->name ? ev->name : "";
  size_t klen = strlen(key), nlen = strlen(name);

  /* The key cannot contain a NUL, so "key\0name" names the pair without
   * ambiguity. Validated events fit the stack buffer. */
  char stack[HD_KEY_MAX + 1 + HD_EVENT_NAME_MAX];
  size_t len = klen + 1 + nlen;
  char *pair = len <= sizeof stack ? stack : malloc(len);
  if (!pair) {
    hd_result_set_error(out, HD_ENOMEM, "count: out of memory");
    return HD_ENOMEM;
  }
  memcpy(pair, key, klen + 1);
  memcpy(pair + klen + 1, name, nlen);

  hd_err err = HD_OK;
  pthread_mutex_lock(&c->mu);
  int64_t *n = hd_strmap_get(c->counts, pair, len);
  if (n) {
    ++*n;
  } else if ((n = malloc(sizeof *n))) {
    *n = 1;
    if (hd_strmap_put(c->counts, pair, len, n) != HD_OK) {
      free(n);
      n = NULL;
    }
  }
  if (n)
    hd_result_set_int64(out, *n);
  else
    err = HD_ENOMEM;
  pthread_mutex_unlock(&c->mu);
  if (pair != stack)
    free(pair);
  if (err != HD_OK)
    hd_result_set_error(out, err, "count: out of memory");
  return err;
}

/* ---- last_value -------------------------------------------------------- */

struct last_values {
  pthread_mutex_t mu;
  hd_strmap *values; /* topic path -> struct stored_value */
};

/* An owned copy of a value, in one allocation. */
struct stored_value {
  hd_value v;
  char bytes[];
};

static struct stored_value *stored_value_new(const hd_value *v) {
  int has_bytes = v->type == HD_VALUE_JSON || v->type == HD_VALUE_STRING ||
                  v->type == HD_VALUE_BINARY || v->type == HD_VALUE_RECORD_V2;
  size_t len = has_bytes && v->u.bytes.data ? v->u.bytes.len : 0;
  if (len > SIZE_MAX - sizeof(struct stored_value) - 1)
    return NULL;
  struct stored_value *s = malloc(sizeof *s + len + 1);
  if (!s)
    return NULL;
  s->v = *v;
  if (has_bytes) {
    if (len)
      memcpy(s->bytes, v->u.bytes.data, len);
    s->bytes[len] = '\0';
    s->v.u.bytes.data = s->bytes;
    s->v.u.bytes.len = len;
  }
  return s;
}

static hd_err last_values_new(void *user_data, void **instance) {
  (void)user_data;
  struct last_values *lv = calloc(1, sizeof *lv);
  if (!lv || !(lv->values = hd_strmap_new(free))) {
    free(lv);
    return HD_ENOMEM;
  }
  pthread_mutex_init(&lv->mu, NULL);
  *instance = lv;
  return HD_OK;
}

static void last_values_free(void *instance) {
  struct last_values *lv = instance;
  hd_strmap_free(lv->values);
  pthread_mutex_destroy(&lv->mu);
  free(lv);
}

static hd_err last_value_fn(const hd_event *ev, void *user_data,
                            hd_result *out) {
  struct last_values *lv = user_data;
  int topic = ev->args_kind == HD_ARGS_SUBSCRIBE ||
              ev->args_kind == HD_ARGS_UPDATE ||
              ev->args_kind == HD_ARGS_UNSUBSCRIBE;
  if (!topic || !ev->topic.path)
    return HD_OK; /* no topic, no value: the result stays NONE */

  const char *path = ev->topic.path;
  size_t plen = strlen(path);
  hd_err err = HD_OK;
  pthread_mutex_lock(&lv->mu);
  if (ev->topic.value.type != HD_VALUE_NONE) {
    struct stored_value *s = stored_value_new(&ev->topic.value);
    if (!s || hd_strmap_put(lv->values, path, plen, s) != HD_OK) {
      free(s);
      err = HD_ENOMEM;
    }
  }
  if (err == HD_OK) {
    struct stored_value *s = hd_strmap_get(lv->values, path, plen);
    if (s)
      err = hd_result_set_value(out, &s->v);
  }
  pthread_mutex_unlock(&lv->mu);
  if (err != HD_OK)
    hd_result_set_error(out, err, "last_value: out of memory");
  return err;
}

/* ---- echo -------------------------------------------------------------- */

static hd_err echo_fn(const hd_event *ev, void *user_data, hd_result *out) {
  (void)user_data;
  char *json = hd_event_to_json(ev);
  hd_err err = json ? hd_result_set_json(out, json) : HD_ENOMEM;
  free(json);
  if (err != HD_OK)
    hd_result_set_error(out, err, "echo: out of memory");
  return err;
}

/* ---- registration ------------------------------------------------------ */

hd_err hd_builtins_register(hd_functions *fns, const char *log_path) {
  static const hd_function_def defs[] = {
      {"count", count_fn, NULL, counter_new, counter_free},
      {"last_value", last_value_fn, NULL, last_values_new, last_values_free},
      {"echo", echo_fn, NULL, NULL, NULL},
  };
  hd_err err;

  if (!fns)
    return HD_EINVAL;
  for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++)
    if ((err = hd_functions_register(fns, &defs[i])) != HD_OK)
      return err;

  struct log_sink *sink = calloc(1, sizeof *sink);
  if (!sink)
    return HD_ENOMEM;
  if (log_path) {
    /* "e": close-on-exec, so the file does not leak into child processes. */
    sink->f = fopen(log_path, "ae");
    if (!sink->f) {
      hd_log(HD_LOG_ERROR, "log: cannot open %s: %s", log_path,
             strerror(errno));
      free(sink);
      return HD_EIO;
    }
    sink->owned = 1;
  } else {
    sink->f = stdout;
  }
  pthread_mutex_init(&sink->mu, NULL);
  hd_function_def log_def = {"log", log_fn, sink, NULL, NULL};
  if ((err = hd_functions_register_owned(fns, &log_def, log_sink_free)) !=
      HD_OK)
    log_sink_free(sink);
  return err;
}
