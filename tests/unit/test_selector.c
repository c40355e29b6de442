/*
 * Unit tests: Diffusion topic selectors (selector.c, selector_parse.c):
 * the documented examples, each form and qualifier, sets, normalisation,
 * refusals with their exact message and position, a pathological pattern
 * cut by the match limit, the literal prefixes and the contract the set's
 * index relies on, paths that are not NUL-terminated, and matching from
 * several threads.
 *
 * Diffusion's documentation cited below:
 *   [JS]  TopicSelectors, JavaScript API,
 *         https://docs.diffusiondata.com/docs/latest/js/classes/topicselectors.html
 *   [MAN] "Topic selectors", manual,
 *         https://docs.diffusiondata.com/docs/latest/manual/html/designguide/data/publication/topic_selector_unified.html
 *   [CLS] "Topic selectors in the Classic API",
 *         https://docs.pushtechnology.com/docs/5.9.24/manual/html/designguide/data/publication/topic_selector_classic.html
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "selector.h"

/* Compiles `text`, failing the test with PCRE2's or the parser's message
 * when it does not. */
static hd_selector *compile(const char *text) {
  char msg[256] = "";
  hd_selector *s = NULL;
  hd_err err = hd_selector_compile(text, &s, msg, sizeof(msg));

  if (err != HD_OK)
    fail_msg("compiling \"%s\": %s (%d)", text, msg, (int)err);
  assert_non_null(s);
  return s;
}

static int sel(const hd_selector *s, const char *path) {
  return hd_selector_matches(s, path, strlen(path));
}

/* Each of `yes` selected, each of `no` not (NULL-terminated lists). */
static void check(const char *text, const char *const *yes,
                  const char *const *no) {
  hd_selector *s = compile(text);

  for (; yes != NULL && *yes != NULL; yes++)
    if (!sel(s, *yes))
      fail_msg("\"%s\" should select \"%s\"", text, *yes);
  for (; no != NULL && *no != NULL; no++)
    if (sel(s, *no))
      fail_msg("\"%s\" should not select \"%s\"", text, *no);
  hd_selector_unref(s);
}

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

/* The refusal of `text`: HD_EINVAL, exactly `want`, nothing in *out. */
static void refused(const char *text, const char *want) {
  char msg[256] = "";
  hd_selector *s = (hd_selector *)&msg; /* must be cleared */

  assert_int_equal(hd_selector_compile(text, &s, msg, sizeof(msg)), HD_EINVAL);
  assert_null(s);
  assert_string_equal(msg, want);
}

/* ---- Diffusion's documented examples ------------------------------------ */

static void test_documented_examples(void **state) {
  (void)state;
  /* [JS] "var selector = diffusion.selectors.parse('?foo/bar/.*');": each
   * regular expression matches the part at its level, same number of
   * parts. */
  check(
      "?foo/bar/.*", L("foo/bar/baz", "/foo/bar/baz/"),
      L("foo/bar/baz/qux", "foo/bar", "foo/bar/", "foo/baz/x", "fooX/bar/baz"));
  /* [JS] "Thus a/b is interpreted as >a/b": an abbreviated path. */
  check("a/b", L("a/b"), L("a", "a/b/c", "a/bc", "b"));
  check(">a/b", L("a/b"), L("a", "a/b/c"));
  /* [JS] a full-path pattern "selects topics for which the regular
   * expression matches the complete topic path". */
  check("*a/b.*", L("a/b", "a/bc", "a/b/c/d"), L("a", "xa/b", "a/c"));
  /* [JS] anyOf("a", "b") is "equivalent to the full-path expression" that
   * selects a or b; as a set "#a////b". */
  check("#a////b", L("a", "b"), L("ab", "a/b", "c"));
  check("*a|b", L("a", "b"), L("ab", "a/b", "c"));
  /* [CLS] "A/B/" selects the subordinates of A/B only, "A/B//" A/B and
   * its subordinates: the descendant qualifiers of today's patterns. */
  check("?A/B/", L("A/B/C", "A/B/C/D"), L("A/B", "A", "A/C/D"));
  check("?A/B//", L("A/B", "A/B/C", "A/B/C/D"), L("A", "A/C"));
}

static void test_documented_prefix_example(void **state) {
  const char *const *p;
  hd_selector *s = compile("?foo/bar/baz/.*/bing");

  (void)state;
  /* [MAN] "for the topic selector ?foo/bar/baz/.*\/bing, the topic path
   * prefix is foo/bar/baz". */
  assert_int_equal(hd_selector_prefixes(s, &p), 1);
  assert_string_equal(p[0], "foo/bar/baz");
  assert_true(sel(s, "foo/bar/baz/x/bing"));
  assert_false(sel(s, "foo/bar/baz/x/bong"));
  hd_selector_unref(s);
}

/* [JS] "The initial > can be omitted if the path begins with a character
 * other than one of #, ?, >, *, $, %, &, or <": the last four are
 * reserved, not paths. */
static void test_reserved_prefixes(void **state) {
  (void)state;
  refused("$a", "selector: reserved prefix '$' at position 1");
  refused("%a", "selector: reserved prefix '%' at position 1");
  refused("&a", "selector: reserved prefix '&' at position 1");
  refused("<a", "selector: reserved prefix '<' at position 1");
  refused("#a////$b", "selector: reserved prefix '$' at position 7");
  check(">$a", L("$a"), L("a")); /* with ">" they are path characters */
}

/* ---- each form and qualifier -------------------------------------------- */

static void test_path_selector(void **state) {
  (void)state;
  check(">a", L("a"), L("a/b", "ab", "b/a", ""));
  check("a/b/c", L("a/b/c"), L("a/b", "a/b/c/d", "a/b/cc"));
  /* Literal bytes: no regular expression in a path selector. */
  check(">a.b/c*", L("a.b/c*"), L("axb/c", "a.b/cc"));
  check(">caf\xc3\xa9", L("caf\xc3\xa9"), L("cafe"));
}

static void test_split_path_qualifiers(void **state) {
  (void)state;
  check("?a/b.*", L("a/b", "a/bc"), L("a/b/c", "a", "x/b"));
  check("?a/b.*/", L("a/b/c", "a/bc/d/e"), L("a/b", "a/bc", "a"));
  check("?a/b.*//", L("a/b", "a/bc", "a/b/c", "a/bc/d/e"), L("a", "x/b/c"));
  /* Each expression is anchored to its whole part. */
  check("?a/b", L("a/b"), L("a/bb", "a/xb", "aa/b"));
  check("?[a-c]+/\\d{2}", L("abc/42", "a/00"), L("abcd/42", "a/4", "a/421"));
  /* A part of ".*" matches an empty part, as Diffusion's split does. */
  check("?a/.*/c", L("a/b/c", "a//c"), L("a/c", "a/b/b/c"));
}

static void test_full_path_qualifiers(void **state) {
  (void)state;
  check("*a/.*", L("a/b", "a/b/c"), L("a", "b/a"));
  check("*a|b/c", L("a", "b/c"), L("a/c", "b"));
  /* The qualifier applies to the whole alternation, not its last branch. */
  check("*a|b/", L("a/x", "b/x", "a/x/y"), L("a", "b"));
  check("*a|b//", L("a", "b", "a/x", "b/x/y"), L("c", "ab"));
  /* A descendant whose name holds a newline is still a descendant. */
  check("*a/", L("a/b\nc"), L("a"));
  /* Anchored at both ends: no search inside the path. */
  check("*b", L("b"), L("ab", "ba", "a/b"));
  /* Inline flags stay inside the expression. */
  check("*(?i)A/b//", L("a/b", "A/B/c"), L("a/c"));
}

static void test_sets(void **state) {
  (void)state;
  check("#>a////?b/.*////*c/d.*", L("a", "b/x", "c/d", "c/dd/e"),
        L("a/x", "b", "b/x/y", "c"));
  /* Nested sets are expanded, as Diffusion does. */
  check("#a////#b////##c", L("a", "b", "c"), L("#b", "d"));
  /* Members keep their qualifiers: of a run of "/", the separator is the
   * last four. */
  check("#?a//////?b", L("a", "a/x", "b"), L("b/x", "c"));
  check("#?a/////>b", L("a/x"), L("a", "b/x"));
  /* A set of one. */
  check("#>a/b", L("a/b"), L("a"));
}

/* ---- normalisation ------------------------------------------------------ */

static void test_normalisation(void **state) {
  (void)state;
  /* One leading and one trailing "/" of a path selector go. */
  check(">/a/b/", L("a/b"), L("a", "a/b/c"));
  check("/a/b", L("a/b"), L("a"));
  /* Paths lose their leading and trailing "/" before matching. */
  check(">a/b", L("/a/b", "a/b/", "//a/b//"), L("a//b", "a/b/c"));
  check("?a/b", L("/a/b/"), L("a//b"));
  check("*a/b", L("/a/b/"), L("a//b"));
  /* One leading "/" of a split-path pattern goes as for a path. */
  check("?/a/.*", L("a/b"), L("a"));
  /* An empty segment inside a path stays one: a path selector never
   * selects it, a pattern may. */
  check("*.*", L("a//b", "a", ""), NULL);
  check("?a/.*//", L("a//b"), L("b"));
}

/* ---- refusals ----------------------------------------------------------- */

static void test_refusals(void **state) {
  (void)state;
  refused("", "selector: empty selector");
  refused(">", "selector: empty path at position 2");
  refused(">/", "selector: empty path at position 2");
  refused("/", "selector: empty path at position 1");
  refused(">a//b", "selector: empty path segment at position 4");
  refused(">//a", "selector: empty path segment at position 3");
  /* A path selector takes no qualifier: "a//" is a mistake, not "a and
   * its descendants" ("?a//" is). */
  refused("a//", "selector: empty path segment at position 3");
  refused("?", "selector: empty pattern at position 2");
  refused("?//", "selector: empty pattern at position 2");
  refused("*/", "selector: empty pattern at position 2");
  refused("?a//b", "selector: empty regular expression at position 4");
  refused("?a///", "selector: empty regular expression at position 4");
  refused("#", "selector: empty member in the selector set at position 2");
  refused("#a////", "selector: empty member in the selector set at position 7");
  /* Of a run of eight "/", the last four separate: "a////" is a path. */
  refused("#a////////b", "selector: empty path segment at position 4");
  refused("#>a////#",
          "selector: empty member in the selector set at position 9");
  refused("a\xff", "selector: invalid UTF-8 at position 2");
}

static void test_regex_refusals(void **state) {
  (void)state;
  /* PCRE2's message; the position is in the whole selector. */
  refused("?a/(b", "selector: missing closing parenthesis in the regular "
                   "expression at position 5");
  refused("*a)", "selector: unmatched closing parenthesis in the regular "
                 "expression at position 3");
  refused("?a/*b", "selector: quantifier does not follow a repeatable item "
                   "in the regular expression at position 4");
  refused("#>a////?x(////*b", "selector: missing closing parenthesis in the "
                              "regular expression at position 10");
  refused("*a[b", "selector: missing terminating ] for character class in "
                  "the regular expression at position 4");
  /* A Java-only construct. */
  refused("?\\p{javaLowerCase}",
          "selector: unknown property after \\P or \\p in the regular "
          "expression at position 18");
  /* Compiles alone, but its comment would swallow the qualifier. */
  refused("*(?x)a#c//", "selector: the regular expression does not end "
                        "where its descendant qualifier begins at position 9");
}

static void test_refusal_message_buffers(void **state) {
  char small[12];
  hd_selector *s = NULL;

  (void)state;
  assert_int_equal(hd_selector_compile(">", &s, NULL, 0), HD_EINVAL);
  assert_null(s);
  assert_int_equal(hd_selector_compile(">", &s, small, sizeof(small)),
                   HD_EINVAL);
  assert_string_equal(small, "selector: e"); /* truncated, terminated */
  assert_int_equal(hd_selector_compile(NULL, &s, small, sizeof(small)),
                   HD_EINVAL);
}

/* ---- limits ------------------------------------------------------------- */

static void test_pathological_pattern_is_cut(void **state) {
  char path[4096];
  hd_selector *s;

  (void)state;
  /* Exponential backtracking on "aaa...c"; the brief's example. PCRE2 sees
   * no "b" in the path and stops at once. */
  s = compile("*(a+)+b");
  memset(path, 'a', sizeof(path) - 2);
  path[sizeof(path) - 2] = 'c';
  path[sizeof(path) - 1] = '\0';
  assert_false(sel(s, path));
  assert_true(sel(s, "aab"));
  hd_selector_unref(s);
  /* With a class at the end there is no such shortcut: 2^40 paths to try,
   * which without the match limit would outlast the test's timeout. */
  s = compile("*(a|aa)+[bd]");
  memset(path, 'a', 40);
  strcpy(path + 40, "c");
  assert_false(sel(s, path));
  assert_true(sel(s, "aaab"));
  hd_selector_unref(s);
  /* The same in one level of a split-path pattern. */
  s = compile("?x/(a+)+[bd]//");
  memcpy(path, "x/", 2);
  memset(path + 2, 'a', 40);
  strcpy(path + 42, "c/y");
  assert_false(sel(s, path));
  assert_true(sel(s, "x/aab/y"));
  hd_selector_unref(s);
}

static void test_deep_paths_within_limits(void **state) {
  char path[2 * 2000 + sizeof("end")];
  size_t n = 0;
  hd_selector *s = compile("*(?:[^/]+/)*end");

  (void)state;
  /* Two nested backtracking points per segment: 2000 segments must stay
   * within the depth limit. */
  for (int i = 0; i < 2000; i++) {
    path[n++] = 'a';
    path[n++] = '/';
  }
  strcpy(path + n, "end");
  assert_true(sel(s, path));
  hd_selector_unref(s);
}

/* ---- prefixes ----------------------------------------------------------- */

/* The prefixes of `text` are exactly `want` (in order). */
static void prefixes_are(const char *text, const char *const *want) {
  const char *const *p;
  hd_selector *s = compile(text);
  size_t n = hd_selector_prefixes(s, &p), i = 0;

  for (; want[i] != NULL; i++) {
    if (i >= n)
      fail_msg("\"%s\": %zu prefixes, wanted more", text, n);
    if (strcmp(p[i], want[i]) != 0)
      fail_msg("\"%s\": prefix %zu is \"%s\", wanted \"%s\"", text, i, p[i],
               want[i]);
  }
  if (i != n)
    fail_msg("\"%s\": %zu prefixes, wanted %zu", text, n, i);
  hd_selector_unref(s);
}

static void test_prefixes_of_each_form(void **state) {
  (void)state;
  prefixes_are(">a/b", L("a/b"));
  prefixes_are("/a/b/", L("a/b"));
  prefixes_are("?a/b/.*/c", L("a/b"));
  prefixes_are("?a/b", L("a/b"));
  prefixes_are("?a/b//", L("a/b"));
  prefixes_are("?.*/b", L(""));
  prefixes_are("?/a/.*", L("a"));
  prefixes_are("*a/b/c.*", L("a/b"));
  prefixes_are("*a/b", L("a/b"));        /* all literal: ends at a boundary */
  prefixes_are("*a/b/", L("a/b"));       /* descendants of a/b */
  prefixes_are("*a/bc?", L("a"));        /* "a/b" need not end a segment */
  prefixes_are("*a/b/?c", L("a"));       /* matches "a/bc" */
  prefixes_are("*a/b{0}/c", L("a"));     /* "b" may vanish: "a//c" */
  prefixes_are("*a/b.*|x", L(""));       /* an alternation */
  prefixes_are("*a/b/(x|y)", L("a/b"));  /* one inside a group */
  prefixes_are("*a/b/(?#(|)z|y", L("")); /* a comment hides nothing */
  prefixes_are("*a/b/(?x)c # (\n|y", L("")); /* nor does the x flag */
  prefixes_are("*/a/.*", L(""));             /* matches no normalised path */
  prefixes_are("*a//b.*", L("a"));
  prefixes_are("*\\Qa/b\\E.*", L(""));
  prefixes_are("#>a/b////?a/c/.*////*x/y.*", L("a/b", "a/c", "x"));
  prefixes_are("#>a/b////?a/.*", L("a")); /* "a" covers "a/b" */
  prefixes_are("#>a/b////*.*", L(""));
  prefixes_are("#>a////>a////>ab", L("a", "ab")); /* "a" is no ancestor */
}

/* The index's lookup (set_index_candidates): every prefix of the path
 * that ends at a segment boundary, after the leading "/". */
static int index_finds(const hd_selector *s, const char *path) {
  const char *const *p;
  size_t n = hd_selector_prefixes(s, &p), len;

  while (*path == '/')
    path++;
  len = strlen(path);
  for (size_t k = 0; k < n; k++) {
    size_t pl = strlen(p[k]);
    if (pl == 0 || (pl <= len && memcmp(path, p[k], pl) == 0 &&
                    (pl == len || path[pl] == '/')))
      return 1;
  }
  return 0;
}

static void test_prefix_contract(void **state) {
  static const char *const selectors[] = {
      ">a/b",         "a",
      "/a/b/",        "?a/b/.*/c",
      "?a/b//",       "?a/.*/",
      "?.*/b",        "*a/b/c.*",
      "*a/b",         "*a/b//",
      "*a/bc?",       "*a/b/?c",
      "*a/b.*|x/y",   "*a/b/(x|y)",
      "*a//b.*",      "*a/b{0}/c",
      "#>a////?b/.*", "#?a/b//////*a/.*",
      "*(?i)a/b",     "*.*",
      "?a/b/c/",      "*a/b/c/",
  };
  static const char *const paths[] = {
      "a",     "a/b",   "a/b/c", "a/b/c/d", "a/bc",    "a/c",    "x/y",
      "/a/b/", "a//b",  "b",     "b/x",     "a/b/x/c", "ab",     "A/B",
      "a/b/",  "a//bc", "a/c/b", "",        "x",       "a/b/c/",
  };

  (void)state;
  /* Whatever a selector selects, the index finds it under a prefix. */
  for (size_t i = 0; i < sizeof(selectors) / sizeof(*selectors); i++) {
    hd_selector *s = compile(selectors[i]);
    for (size_t j = 0; j < sizeof(paths) / sizeof(*paths); j++)
      if (sel(s, paths[j]) && !index_finds(s, paths[j]))
        fail_msg("\"%s\" selects \"%s\" but no prefix finds it", selectors[i],
                 paths[j]);
    hd_selector_unref(s);
  }
}

/* ---- paths that are not NUL-terminated ---------------------------------- */

static void test_matches_by_length(void **state) {
  static const char buf[] = "a/b/cXYZ";
  char *exact = malloc(5); /* no terminator: ASan sees any overread */
  hd_selector *path = compile(">a/b/c"), *split = compile("?a/b/c"),
              *split_re = compile("?a/b/c+"), *full = compile("*a/b/c"),
              *desc = compile("?a/b/");

  (void)state;
  assert_non_null(exact);
  memcpy(exact, "a/b/c", 5);
  for (int i = 0; i < 2; i++) {
    const char *p = i == 0 ? buf : exact;
    assert_true(hd_selector_matches(path, p, 5));
    assert_true(hd_selector_matches(split, p, 5));
    assert_true(hd_selector_matches(split_re, p, 5));
    assert_true(hd_selector_matches(full, p, 5));
    assert_true(hd_selector_matches(desc, p, 5));
    assert_false(hd_selector_matches(path, p, 4)); /* "a/b/" is "a/b" */
    assert_false(hd_selector_matches(desc, p, 4));
  }
  assert_false(hd_selector_matches(path, buf, 6)); /* "a/b/cX" */
  assert_false(hd_selector_matches(full, buf, 6));
  assert_false(hd_selector_matches(split_re, buf, 6));
  assert_false(hd_selector_matches(path, NULL, 0));
  assert_false(hd_selector_matches(NULL, buf, 5));
  free(exact);
  hd_selector_unref(path);
  hd_selector_unref(split);
  hd_selector_unref(split_re);
  hd_selector_unref(full);
  hd_selector_unref(desc);
}

/* ---- references and threads --------------------------------------------- */

static void test_references_and_text(void **state) {
  const char *const *p;
  hd_selector *s = compile("#>a////?b//");

  (void)state;
  assert_ptr_equal(hd_selector_ref(s), s);
  hd_selector_unref(s); /* one left: still usable */
  assert_string_equal(hd_selector_text(s), "#>a////?b//");
  assert_true(sel(s, "b/c"));
  assert_int_equal(hd_selector_prefixes(s, &p), 2);
  hd_selector_unref(s);
  hd_selector_unref(NULL);
  assert_null(hd_selector_ref(NULL));
}

struct race {
  hd_selector *s;
  int wrong;
};

static void *match_many(void *arg) {
  struct race *r = arg;

  for (int i = 0; i < 2000; i++) {
    r->wrong += !sel(r->s, "a/b/c") + sel(r->s, "a/x/c");
    r->wrong += !sel(r->s, "q/r/s/t");
  }
  return NULL;
}

/* One compiled selector, several threads: each match has its own match
 * data (a TSan build checks the rest). */
static void test_threads_share_a_selector(void **state) {
  pthread_t t[4];
  struct race r[4];
  hd_selector *s = compile("#?a/b+/c////*q/.*//");

  (void)state;
  for (int i = 0; i < 4; i++) {
    r[i] = (struct race){s, 0};
    assert_int_equal(pthread_create(&t[i], NULL, match_many, &r[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(r[i].wrong, 0);
  }
  hd_selector_unref(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_documented_examples),
      cmocka_unit_test(test_documented_prefix_example),
      cmocka_unit_test(test_reserved_prefixes),
      cmocka_unit_test(test_path_selector),
      cmocka_unit_test(test_split_path_qualifiers),
      cmocka_unit_test(test_full_path_qualifiers),
      cmocka_unit_test(test_sets),
      cmocka_unit_test(test_normalisation),
      cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_regex_refusals),
      cmocka_unit_test(test_refusal_message_buffers),
      cmocka_unit_test(test_pathological_pattern_is_cut),
      cmocka_unit_test(test_deep_paths_within_limits),
      cmocka_unit_test(test_prefixes_of_each_form),
      cmocka_unit_test(test_prefix_contract),
      cmocka_unit_test(test_matches_by_length),
      cmocka_unit_test(test_references_and_text),
      cmocka_unit_test(test_threads_share_a_selector),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
