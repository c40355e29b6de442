/*
 * selector.c - Diffusion topic selectors (selector.h): compiling (the
 * grammar is selector_parse.c), matching a topic path, the literal
 * prefixes for the set's index, references.
 */
#include "selector_internal.h"
#include "clock.h"
#include "errmsg.h"
#include "handlerd/log.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Bounds on one pcre2_match: steps (about 1 ms of backtracking) and
 * nested backtracking points. A split pattern such as "(?:[^/]+/)*x" takes
 * two of those per segment, so the depth allows paths of thousands of
 * segments; the heap limit (KiB) caps the frames that depth may need. */
#define SEL_MATCH_LIMIT 100000
#define SEL_DEPTH_LIMIT 10000
#define SEL_HEAP_LIMIT_KIB 16384

/* At most one log line per interval for all selectors: a selector that
 * hits a limit does so on every event of its kind. */
#define SEL_LOG_INTERVAL_NS (10 * INT64_C(1000000000))

static _Atomic int64_t last_report_ns; /* 0: never */
static atomic_ullong unreported;

static void report_limit(const hd_selector *s, int rc, size_t len) {
  int64_t now = mono_ns(), last = atomic_load(&last_report_ns);
  PCRE2_UCHAR why[120];

  if ((last != 0 && now - last < SEL_LOG_INTERVAL_NS) ||
      !atomic_compare_exchange_strong(&last_report_ns, &last, now)) {
    atomic_fetch_add(&unreported, 1);
    return;
  }
  pcre2_get_error_message(rc, why, sizeof(why));
  hd_log(HD_LOG_WARN,
         "selector %.200s: %s on a topic path of %zu bytes, counted as no "
         "match (%llu more since the last report)",
         s->text, (const char *)why, len, atomic_exchange(&unreported, 0));
}

/* Whole-subject match (the options anchor both ends). A limit or any other
 * error is no match: a selector must never hold up dispatch. */
static int re_matches(const hd_selector *s, const pcre2_code *re,
                      const char *subject, size_t len, pcre2_match_data **md) {
  int rc;

  if (*md == NULL && (*md = pcre2_match_data_create(1, NULL)) == NULL) {
    report_limit(s, PCRE2_ERROR_NOMEMORY, len);
    return 0;
  }
  rc = pcre2_match(re, (PCRE2_SPTR)subject, len, 0, 0, *md, s->mctx);
  if (rc >= 0)
    return 1;
  if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT ||
      rc == PCRE2_ERROR_HEAPLIMIT || rc == PCRE2_ERROR_NOMEMORY)
    report_limit(s, rc, len);
  return 0; /* no match, or a path that is not UTF-8 */
}

static int split_matches(const hd_selector *s, const sel_member *m,
                         const char *path, size_t len, pcre2_match_data **md) {
  size_t segs = 1, at = 0;

  for (size_t i = 0; i < len; i++)
    segs += path[i] == '/';
  if ((m->qual == QUAL_MATCH && segs != m->n_parts) ||
      (m->qual == QUAL_DESCENDANTS && segs <= m->n_parts) ||
      (m->qual == QUAL_MATCH_AND_DESCENDANTS && segs < m->n_parts))
    return 0;
  for (size_t i = 0; i < m->n_parts; i++) {
    const sel_part *part = &m->parts[i];
    const char *slash = memchr(path + at, '/', len - at);
    size_t end = slash != NULL ? (size_t)(slash - path) : len;

    if (part->re == NULL ? end - at != part->len ||
                               memcmp(path + at, part->lit, part->len) != 0
                         : !re_matches(s, part->re, path + at, end - at, md))
      return 0;
    at = end + 1;
  }
  return 1;
}

static int member_matches(const hd_selector *s, const sel_member *m,
                          const char *path, size_t len, pcre2_match_data **md) {
  switch (m->kind) {
  case SEL_PATH:
    return len == m->path_len && memcmp(path, m->path, len) == 0;
  case SEL_SPLIT:
    return split_matches(s, m, path, len, md);
  case SEL_FULL:
    return re_matches(s, m->re, path, len, md);
  }
  return 0;
}

int hd_selector_matches(const hd_selector *s, const char *path, size_t len) {
  pcre2_match_data *md = NULL; /* made on the first regular expression */
  int hit = 0;

  if (s == NULL)
    return 0;
  if (path == NULL)
    path = "", len = 0;
  /* Diffusion's canonical path: no leading or trailing "/" (an empty
   * segment inside stays one, which no path selector selects). */
  while (len > 0 && path[0] == '/')
    path++, len--;
  while (len > 0 && path[len - 1] == '/')
    len--;
  for (size_t i = 0; i < s->n_members && !hit; i++)
    hit = member_matches(s, &s->members[i], path, len, &md);
  pcre2_match_data_free(md);
  return hit;
}

/* Whether every path under prefix `p` is under prefix `q` too: q is p or
 * a segment-ancestor of it ("" of everything). */
static int covers(const sel_member *q, const sel_member *p) {
  return q->prefix_len == 0 ||
         (q->prefix_len <= p->prefix_len &&
          memcmp(q->prefix, p->prefix, q->prefix_len) == 0 &&
          (q->prefix_len == p->prefix_len || p->prefix[q->prefix_len] == '/'));
}

/* The members' prefixes without those another one covers: the index looks
 * up every segment-boundary prefix of a path, so a set filed under "a"
 * need not be filed under "a/b" too. */
static hd_err build_prefixes(hd_selector *s) {
  if ((s->prefixes = calloc(s->n_members, sizeof(*s->prefixes))) == NULL)
    return HD_ENOMEM;
  for (size_t i = 0; i < s->n_members; i++) {
    const sel_member *p = &s->members[i];
    int covered = 0;

    for (size_t j = 0; j < s->n_members && !covered; j++) {
      const sel_member *q = &s->members[j];
      covered =
          j != i && covers(q, p) && (q->prefix_len < p->prefix_len || j < i);
    }
    if (covered)
      continue;
    if ((s->prefixes[s->n_prefixes] = strndup(p->prefix, p->prefix_len)) ==
        NULL)
      return HD_ENOMEM;
    s->n_prefixes++;
  }
  return HD_OK;
}

static void selector_free(hd_selector *s) {
  for (size_t i = 0; i < s->n_members; i++) {
    sel_member *m = &s->members[i];

    for (size_t j = 0; j < m->n_parts; j++)
      pcre2_code_free(m->parts[j].re);
    free(m->parts);
    pcre2_code_free(m->re);
  }
  free(s->members);
  for (size_t i = 0; i < s->n_prefixes; i++)
    free(s->prefixes[i]);
  free(s->prefixes);
  pcre2_match_context_free(s->mctx);
  free(s->text);
  free(s);
}

hd_err hd_selector_compile(const char *text, hd_selector **out, char *msg,
                           size_t msg_size) {
  hd_selector *s;
  hd_err err;

  *out = NULL;
  if (text == NULL || text[0] == '\0')
    return hd_errmsg(msg, msg_size, HD_EINVAL, "selector: empty selector");
  if ((s = calloc(1, sizeof(*s))) == NULL || (s->text = strdup(text)) == NULL ||
      (s->mctx = pcre2_match_context_create(NULL)) == NULL) {
    err = HD_ENOMEM;
    goto fail;
  }
  atomic_init(&s->refs, 1);
  pcre2_set_match_limit(s->mctx, SEL_MATCH_LIMIT);
  pcre2_set_depth_limit(s->mctx, SEL_DEPTH_LIMIT);
  pcre2_set_heap_limit(s->mctx, SEL_HEAP_LIMIT_KIB);
  if ((err = sel_parse(s, msg, msg_size)) != HD_OK)
    goto fail;
  if ((err = build_prefixes(s)) != HD_OK)
    goto fail;
  *out = s;
  return HD_OK;
fail:
  if (err == HD_ENOMEM)
    hd_errmsg(msg, msg_size, HD_ENOMEM, "selector: out of memory");
  if (s != NULL)
    selector_free(s);
  return err;
}

hd_selector *hd_selector_ref(hd_selector *s) {
  if (s != NULL)
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
  return s;
}

void hd_selector_unref(hd_selector *s) {
  if (s != NULL &&
      atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
    selector_free(s);
}

const char *hd_selector_text(const hd_selector *s) {
  return s != NULL ? s->text : "";
}

size_t hd_selector_prefixes(const hd_selector *s, const char *const **out) {
  static const char *const any[] = {""};

  if (s == NULL) {
    *out = any;
    return 1;
  }
  *out = (const char *const *)s->prefixes;
  return s->n_prefixes;
}
