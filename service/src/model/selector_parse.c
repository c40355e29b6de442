/*
 * selector_parse.c - Diffusion's topic selector grammar (selector.h) into
 * sel_member rows: path selectors, split-path and full-path patterns with
 * their descendant qualifiers, selector sets. Positions in messages are
 * 1-based byte offsets into the whole selector text, so a client can point
 * at the character even inside the third member of a set.
 */
#include "selector_internal.h"
#include "errmsg.h"
#include "utf8.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Anchored at both ends: Java's Pattern.matches(), which Diffusion uses,
 * wants the whole segment or path. \C could split a UTF-8 character. */
#define SEL_RE_OPTIONS                                                         \
  (PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_UTF | PCRE2_NEVER_BACKSLASH_C)

typedef struct parser {
  hd_selector *s;
  const char *t; /* s->text */
  char *msg;
  size_t msg_size;
} parser;

static hd_err fail(parser *p, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static hd_err fail(parser *p, size_t at, const char *fmt, ...) {
  char what[200];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(what, sizeof(what), fmt, ap);
  va_end(ap);
  return hd_errmsg(p->msg, p->msg_size, HD_EINVAL,
                   "selector: %s at position %zu", what, at + 1);
}

static hd_err no_memory(parser *p) {
  return hd_errmsg(p->msg, p->msg_size, HD_ENOMEM, "selector: out of memory");
}

/* Characters that make a piece of pattern more than its literal self
 * (outside a character class, without the x flag). ']' and '}' alone are
 * literal to PCRE2, but counting them costs only a regex compile. */
static int is_meta(char c) {
  return c != '\0' && strchr("\\.+*?[]^$(){}|", c) != NULL;
}

static int is_literal(const char *s, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (is_meta(s[i]))
      return 0;
  return 1;
}

/* Compiles t[at, at + len) (len > 0). With a qualifier the expression is
 * wrapped so that it must match a whole ancestor of the path: "(?:re)"
 * keeps an alternation or an inline flag inside it, and "(?s:.+)" takes
 * descendants whose names hold a newline too. */
static hd_err compile_re(parser *p, size_t at, size_t len, sel_qual qual,
                         pcre2_code **out) {
  static const char *const suffix[] = {
      [QUAL_MATCH] = "",
      [QUAL_DESCENDANTS] = ")/(?s:.+)",
      [QUAL_MATCH_AND_DESCENDANTS] = ")(?:/(?s:.+))?",
  };
  PCRE2_UCHAR why[160];
  PCRE2_SIZE off;
  int code;
  pcre2_code *re = pcre2_compile((PCRE2_SPTR)(p->t + at), len, SEL_RE_OPTIONS,
                                 &code, &off, NULL);
  char *wrapped;
  size_t n;

  if (re == NULL) {
    if (code == PCRE2_ERROR_HEAP_FAILED)
      return no_memory(p);
    pcre2_get_error_message(code, why, sizeof(why));
    /* PCRE2 often points just past the trouble (a missing ')' at the end
     * of the expression): keep the position on the expression. */
    return fail(p, at + (off < len ? off : len - 1),
                "%s in the regular expression", (const char *)why);
  }
  if (qual == QUAL_MATCH) {
    *out = re;
    return HD_OK;
  }
  pcre2_code_free(re);
  n = 3 + len + strlen(suffix[qual]);
  if ((wrapped = malloc(n + 1)) == NULL)
    return no_memory(p);
  snprintf(wrapped, n + 1, "(?:%.*s%s", (int)len, p->t + at, suffix[qual]);
  re = pcre2_compile((PCRE2_SPTR)wrapped, n, SEL_RE_OPTIONS, &code, &off, NULL);
  free(wrapped);
  if (re == NULL) {
    if (code == PCRE2_ERROR_HEAP_FAILED)
      return no_memory(p);
    /* It compiled alone: its end swallowed the wrapper (a "#" comment
     * under (?x), an unclosed \Q) or it starts with a (*VERB) that must
     * open the whole pattern. */
    return fail(p, at + len,
                "the regular expression does not end where its descendant "
                "qualifier begins");
  }
  *out = re;
  return HD_OK;
}

/* Strips a trailing "//" or "/" off t[at, *end) into its qualifier. */
static sel_qual take_qualifier(const char *t, size_t at, size_t *end) {
  if (*end - at >= 2 && t[*end - 1] == '/' && t[*end - 2] == '/') {
    *end -= 2;
    return QUAL_MATCH_AND_DESCENDANTS;
  }
  if (*end > at && t[*end - 1] == '/') {
    *end -= 1;
    return QUAL_DESCENDANTS;
  }
  return QUAL_MATCH;
}

/* ">path" or an abbreviated path: Diffusion drops one leading and one
 * trailing "/" (its canonical form); any other empty segment is refused
 * rather than read as a descendant qualifier, which only patterns take
 * ("?a/b//"). */
static hd_err parse_path(parser *p, size_t at, size_t end, sel_member *m) {
  size_t a = at, b = end, seg;

  if (a < b && p->t[a] == '/')
    a++;
  if (b > a && p->t[b - 1] == '/')
    b--;
  if (a == b)
    return fail(p, at, "empty path");
  for (size_t i = seg = a; i <= b; i++) {
    if (i < b && p->t[i] != '/')
      continue;
    if (i == seg)
      return fail(p, seg, "empty path segment");
    seg = i + 1;
  }
  m->kind = SEL_PATH;
  m->path = m->prefix = p->t + a;
  m->path_len = m->prefix_len = b - a;
  return HD_OK;
}

/* "?re/re/..." with an optional qualifier. One leading "/" goes as for a
 * path (a normalised path has no empty first segment to match). */
static hd_err parse_split(parser *p, size_t at, size_t end, sel_member *m) {
  size_t a = at, n = 1, seg;
  int leading = 1; /* no regular expression yet */
  hd_err err;

  m->kind = SEL_SPLIT;
  m->qual = take_qualifier(p->t, at, &end);
  if (a < end && p->t[a] == '/')
    a++;
  if (a == end)
    return fail(p, at, "empty pattern");
  for (size_t i = a; i < end; i++)
    n += p->t[i] == '/';
  if ((m->parts = calloc(n, sizeof(*m->parts))) == NULL)
    return no_memory(p);
  m->prefix = p->t + a;
  seg = a;
  for (size_t i = a; i <= end; i++) {
    sel_part *part = &m->parts[m->n_parts];

    if (i < end && p->t[i] != '/')
      continue;
    if (i == seg)
      return fail(p, seg, "empty regular expression");
    part->lit = p->t + seg;
    part->len = i - seg;
    m->n_parts++;
    if (!is_literal(part->lit, part->len)) {
      leading = 0;
      if ((err = compile_re(p, seg, part->len, QUAL_MATCH, &part->re)) != HD_OK)
        return err;
    } else if (leading) {
      m->prefix_len = i - a; /* the prefix reaches this literal */
    }
    seg = i + 1;
  }
  return HD_OK;
}

/* Whether an alternation at the top level may make the whole expression
 * something else than its leading literal ("a/b.*|c"). PCRE2 has accepted
 * the expression, so its syntax is followed; under the x flag a "#"
 * comment can hide parentheses, so that flag gives up. */
static int may_alternate(const char *re, size_t len) {
  int depth = 0;

  for (size_t i = 0; i < len; i++) {
    if (re[i] == '\\' && i + 1 < len && re[i + 1] == 'Q') {
      const char *e = memmem(re + i + 2, len - i - 2, "\\E", 2);
      if (e == NULL)
        return 0; /* literal to the end */
      i = (size_t)(e - re) + 1;
    } else if (re[i] == '\\') {
      i++;
    } else if (re[i] == '[') {
      i++;
      if (i < len && re[i] == '^')
        i++;
      if (i < len && re[i] == ']')
        i++; /* a leading ']' is a member */
      for (; i < len && re[i] != ']'; i++) {
        if (re[i] == '\\')
          i++;
        else if (re[i] == '[' && i + 1 < len && re[i + 1] == ':') {
          const char *e = memmem(re + i, len - i, ":]", 2);
          i = e != NULL ? (size_t)(e - re) + 1 : len;
        }
      }
    } else if (re[i] == '(' && i + 2 < len && re[i + 1] == '?' &&
               re[i + 2] == '#') {
      const char *e = memchr(re + i, ')', len - i); /* (?#comment) */
      i = e != NULL ? (size_t)(e - re) : len;
    } else if (re[i] == '(') {
      for (size_t f = i + 1;
           f + 1 < len && re[i + 1] == '?' && re[f + 1] != '\0' &&
           strchr("imnsxJU^-", re[f + 1]) != NULL;
           f++)
        if (re[f + 1] == 'x')
          return 1;
      depth++;
    } else if (re[i] == ')') {
      depth--;
    } else if (re[i] == '|' && depth == 0) {
      return 1;
    }
  }
  return 0;
}

/* The literal a full-path expression starts with, cut back to whole
 * segments: every path it matches begins with them. */
static void full_prefix(const char *re, size_t len, const char **out,
                        size_t *out_len) {
  size_t k = 0, n = 0;

  while (k < len && !is_meta(re[k]))
    k++;
  if (k == len) {
    n = len; /* all literal: the path ends there, or goes on with "/" */
  } else if (!may_alternate(re, len)) {
    /* "a/?" or "a/{2}": a quantifier makes the character before it
     * optional, so it is not part of the literal. */
    if (k > 0 && strchr("?*+{", re[k]) != NULL)
      k--;
    while (k > 0 && re[k - 1] != '/')
      k--;
    n = k > 0 ? k - 1 : 0; /* up to the last "/", without it */
  }
  /* A normalised path neither starts with "/" nor has an empty segment:
   * stop before either, keeping whole segments. */
  if (n > 0 && re[0] == '/')
    n = 0;
  for (size_t i = 1; i < n; i++)
    if (re[i] == '/' && re[i - 1] == '/') {
      n = i - 1;
      break;
    }
  while (n > 0 && re[n - 1] == '/')
    n--;
  *out = re;
  *out_len = n;
}

/* "*re" with an optional qualifier. */
static hd_err parse_full(parser *p, size_t at, size_t end, sel_member *m) {
  sel_qual qual = take_qualifier(p->t, at, &end);

  m->kind = SEL_FULL;
  if (at == end)
    return fail(p, at, "empty pattern");
  full_prefix(p->t + at, end - at, &m->prefix, &m->prefix_len);
  return compile_re(p, at, end - at, qual, &m->re);
}

static hd_err parse_member(parser *p, size_t at, size_t end, int in_set,
                           sel_member *m) {
  /* A nested set ("#a////#b") is expanded, as Diffusion does. */
  while (in_set && at < end && p->t[at] == '#')
    at++;
  if (at == end)
    return fail(p, at, "empty member in the selector set");
  switch (p->t[at]) {
  case '>':
    return parse_path(p, at + 1, end, m);
  case '?':
    return parse_split(p, at + 1, end, m);
  case '*':
    return parse_full(p, at + 1, end, m);
  case '$':
  case '%':
  case '&':
  case '<':
    return fail(p, at, "reserved prefix '%c'", p->t[at]);
  default:
    return parse_path(p, at, end, m);
  }
}

/* The end of the member that starts at `at` and where the next one starts
 * (*next = len: none). The separator is "////"; of a longer run of "/",
 * it is the last four, the first ones a qualifier or a trailing "/" of
 * the member before ("#?a//////?b" is "?a//" and "?b"). */
static size_t member_end(const char *t, size_t at, size_t len, size_t *next) {
  for (size_t i = at; i < len; i++) {
    size_t run = 0;

    while (i + run < len && t[i + run] == '/')
      run++;
    if (run >= 4) {
      *next = i + run;
      return i + run - 4;
    }
    i += run;
  }
  *next = len;
  return len;
}

hd_err sel_parse(hd_selector *s, char *msg, size_t msg_size) {
  parser p = {s, s->text, msg, msg_size};
  size_t len = strlen(s->text), bad = hd_utf8_valid_prefix(s->text, len);
  size_t at, next, n = 1;
  int set = s->text[0] == '#';
  hd_err err;

  if (bad < len)
    return fail(&p, bad, "invalid UTF-8");
  if (set) {
    for (at = 1; member_end(s->text, at, len, &next) < len; at = next)
      n++;
  }
  if ((s->members = calloc(n, sizeof(*s->members))) == NULL)
    return no_memory(&p);
  if (!set) {
    s->n_members = 1;
    return parse_member(&p, 0, len, 0, &s->members[0]);
  }
  for (at = 1; s->n_members < n; at = next) {
    size_t end = member_end(s->text, at, len, &next);

    if ((err = parse_member(&p, at, end, 1, &s->members[s->n_members++])) !=
        HD_OK)
      return err;
  }
  return HD_OK;
}
