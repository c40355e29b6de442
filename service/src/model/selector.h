/*
 * selector.h - Diffusion topic selectors as handler filters.
 *
 * The grammar, as Diffusion defines it (TopicSelector):
 *   ">path" or "path"    path selector: that exact path;
 *   "?a/b.*\/c"          split-path pattern: one regular expression per
 *                        path segment, the same number of segments;
 *   "*a/b.*"             full-path pattern: one regular expression over the
 *                        whole path;
 *   "#sel1////sel2"      selector set: any of its members (separated by
 *                        "////");
 *   qualifiers           a trailing "/" selects the descendants only (not
 *                        the match itself), "//" the match and its
 *                        descendants.
 * Paths are normalised as Diffusion does (no leading or trailing "/", no
 * empty segment). Regular expressions are PCRE2, compiled once, anchored
 * (a whole segment / the whole path must match), with match and depth
 * limits so a pathological pattern cannot stall dispatch: a match that hits
 * a limit counts as no match (and is logged, rate-limited).
 *
 * Index: hd_selector_prefixes gives the literal prefixes every matching path
 * starts with (a path selector's path; a pattern's literal leading
 * segments), so a set can find its candidates by the path's prefixes
 * instead of trying every selector.
 *
 * Thread safety: a compiled selector is immutable; matching allocates its
 * own match data, so any thread may match at once.
 */
#ifndef HD_SELECTOR_H
#define HD_SELECTOR_H

#include "handlerd/error.h"

#include <stddef.h>

typedef struct hd_selector hd_selector;

/* Compiles `text` (NUL-terminated) into *out with one reference.
 * HD_EINVAL with a message naming the position: "selector: unbalanced
 * parenthesis in the regular expression at position 7", "selector: empty
 * selector", ...; HD_ENOMEM. */
hd_err hd_selector_compile(const char *text, hd_selector **out, char *msg,
                           size_t msg_size);

hd_selector *hd_selector_ref(hd_selector *s);
/* Drops one reference; the last frees it. NULL is fine. */
void hd_selector_unref(hd_selector *s);

/* The text it was compiled from (borrowed). */
const char *hd_selector_text(const hd_selector *s);

/* 1 when the selector selects `path` (`len` bytes, not necessarily
 * NUL-terminated), else 0. */
int hd_selector_matches(const hd_selector *s, const char *path, size_t len);

/* The literal prefixes every path it selects begins with (each
 * NUL-terminated, normalised, borrowed; "" when it may select any path).
 * Returns how many (>= 1). */
size_t hd_selector_prefixes(const hd_selector *s, const char *const **out);

#endif
