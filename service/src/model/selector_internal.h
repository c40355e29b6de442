/*
 * selector_internal.h - the compiled form of a topic selector, shared by
 * the parser (selector_parse.c) and the matcher (selector.c). Nothing
 * outside these two files includes it.
 */
#ifndef HD_SELECTOR_INTERNAL_H
#define HD_SELECTOR_INTERNAL_H

#include "selector.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdatomic.h>
#include <stddef.h>

typedef enum sel_kind { SEL_PATH, SEL_SPLIT, SEL_FULL } sel_kind;

/* What a pattern selects relative to the paths its expression matches:
 * nothing appended, "/" or "//". */
typedef enum sel_qual {
  QUAL_MATCH,
  QUAL_DESCENDANTS,
  QUAL_MATCH_AND_DESCENDANTS
} sel_qual;

/* One level of a split-path pattern: a literal compares bytes (the common
 * case, and cheaper than a regular expression that says the same), else a
 * regular expression. */
typedef struct sel_part {
  const char *lit; /* into the selector's text */
  size_t len;
  pcre2_code *re; /* NULL: literal */
} sel_part;

/* One selector; a selector set has several. Slices point into the
 * selector's own copy of its text. */
typedef struct sel_member {
  sel_kind kind;
  sel_qual qual;      /* SEL_SPLIT; SEL_FULL has it in `re` */
  const char *path;   /* SEL_PATH: the normalised path */
  size_t path_len;    /* SEL_PATH */
  sel_part *parts;    /* SEL_SPLIT */
  size_t n_parts;     /* SEL_SPLIT */
  pcre2_code *re;     /* SEL_FULL, the qualifier compiled in */
  const char *prefix; /* the literal prefix (hd_selector_prefixes) */
  size_t prefix_len;
} sel_member;

struct hd_selector {
  atomic_size_t refs;
  char *text; /* as given */
  sel_member *members;
  size_t n_members;
  char **prefixes; /* distinct, none a segment-ancestor of another */
  size_t n_prefixes;
  pcre2_match_context *mctx; /* the limits; read-only once built */
};

/* Parses s->text into s->members (s->n_members). HD_EINVAL with
 * "selector: ..." in msg, HD_ENOMEM. On failure the members built so far
 * stay in `s` for the caller to free. */
hd_err sel_parse(hd_selector *s, char *msg, size_t msg_size);

#endif
