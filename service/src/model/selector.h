/*
 * selector.h - Diffusion topic selectors as handler filters.
 *
 * The grammar, as Diffusion defines it (TopicSelectors.parse):
 *   ">path" or "path"    path selector: that exact path. The ">" may be
 *                        left out unless the path starts with one of
 *                        # ? > * $ % & < ("$", "%", "&", "<" are reserved
 *                        and refused). Bytes, no regular expression.
 *   "?a/b.*\/c"          split-path pattern: one regular expression per
 *                        path segment, the same number of segments; a
 *                        segment without regex metacharacters is compared
 *                        as bytes;
 *   "*a/b.*"             full-path pattern: one regular expression over the
 *                        whole path;
 *   "#sel1////sel2"      selector set: any of its members (separated by
 *                        "////"; of a longer run of "/" the separator is
 *                        the last four, so "#?a//////?b" is "?a//" and
 *                        "?b"; a nested "#" set is expanded);
 *   qualifiers           on the two patterns only: a trailing "/" selects
 *                        the descendants of a match only (not the match
 *                        itself), "//" the match and its descendants
 *                        ("?a/b//": a/b, a/b/c, ...).
 * Normalisation, as Diffusion canonicalises: a path selector and a
 * split-path pattern lose one leading "/" (and a path selector one
 * trailing "/"); any other empty segment in them is refused (">a//" is a
 * mistake, not a qualifier). The path matched loses its leading and
 * trailing "/"s; an empty segment inside it stays ("a//b": no path
 * selector selects it, "*.*" does). A full-path pattern is taken as
 * written: "*\/a" matches no normalised path.
 *
 * Regular expressions are PCRE2 (UTF-8 mode), compiled once, anchored at
 * both ends like Java's Pattern.matches(): a whole segment / the whole path
 * must match. A full-path pattern with a qualifier compiles as
 * "(?:re)/(?s:.+)" or "(?:re)(?:/(?s:.+))?", so the qualifier applies to
 * the whole expression ("*a|b/" selects the descendants of a and of b).
 * Each pcre2_match is bounded (100000 steps, depth 10000, 16 MiB of heap)
 * so a pathological pattern cannot stall dispatch: a match that hits a
 * limit counts as no match and is logged (WARN, at most once per 10 s for
 * all selectors, with the count since the last line).
 *
 * Java (Diffusion) versus PCRE2, what remains different:
 *   - the same: classes, quantifiers (lazy and possessive), atomic groups,
 *     lookahead, fixed-length lookbehind, named groups and \k<name>, \Q..\E,
 *     \p{L} / \p{Lu} / \p{Greek}, POSIX [[:alpha:]], inline flags (?i)
 *     (?s) (?m) (?x);
 *   - refused at compile: Java's property names \p{javaLowerCase},
 *     \p{IsAlphabetic}, \p{InGreek} (blocks), \uhhhh (write \x{hhhh}),
 *     variable-length lookbehind ((?<=a+));
 *   - accepted but different: class intersection and union
 *     ([a-z&&[^b]] is a plain class ending at the first "]"), (?U) is
 *     "ungreedy" in PCRE2, not Java's UNICODE_CHARACTER_CLASS; (?i) folds
 *     Unicode case in UTF mode (Java: ASCII unless (?u));
 *   - PCRE2 only: recursion (?R), (?|...), \K, backtracking verbs (*SKIP);
 *     \C is refused;
 *   - Java has no step limit; here a limit means no match.
 *
 * Index: hd_selector_prefixes gives the literal prefixes every selected
 * path starts with, so a set finds its candidates by the path's prefixes
 * instead of trying every selector. Each prefix is "" or whole, non-empty
 * segments ("a/b", never "a/" or "a/b" of "a/bc"); the promise: when a
 * selector selects a path, one of its prefixes is "" or equals the
 * normalised path cut at a segment boundary ("a", "a/b" or "a/b/c" for
 * "a/b/c"). So a lookup of "" and of every prefix of the path (after its
 * leading "/"s) that ends at a "/" or at its end finds every candidate;
 * the candidates must still be matched. Per form: a path selector's path;
 * a split-path pattern's leading literal segments ("?a/b/.*\/c": "a/b");
 * a full-path pattern's literal start cut back to its last "/" (all of
 * it when the expression is one literal: "*a/b" gives "a/b"; "*a/b.*"
 * gives "a"; a character before a quantifier is not literal; a top-level
 * "|" gives ""); a set: its members' prefixes without those another one
 * covers (no duplicates, no "a/b" next to "a", only "" next to "").
 *
 * Thread safety: a compiled selector is immutable; matching allocates its
 * own match data, so any thread may match at once.
 */
#ifndef HD_SELECTOR_H
#define HD_SELECTOR_H

#include "handlerd/error.h"

#include <stddef.h>

typedef struct hd_selector hd_selector;

/* Compiles `text` (NUL-terminated UTF-8) into *out with one reference.
 * HD_EINVAL with "selector: <what> at position N", N the 1-based byte
 * offset in the whole text (inside a set too; for a regular expression
 * PCRE2's message and error offset, kept on the expression): "selector:
 * missing closing parenthesis in the regular expression at position 5"
 * for "?a/(b", "selector: empty path segment at position 4" for ">a//b";
 * but just "selector: empty selector" for "" or NULL. HD_ENOMEM ("selector:
 * out of memory"). *out is NULL on failure. */
hd_err hd_selector_compile(const char *text, hd_selector **out, char *msg,
                           size_t msg_size);

hd_selector *hd_selector_ref(hd_selector *s);
/* Drops one reference; the last frees it. NULL is fine. */
void hd_selector_unref(hd_selector *s);

/* The text it was compiled from (borrowed). */
const char *hd_selector_text(const hd_selector *s);

/* 1 when the selector selects `path` (`len` bytes, not necessarily
 * NUL-terminated; normalised first, see above), else 0. 0 for a NULL
 * selector, a path that is not UTF-8 where a regular expression looks at
 * it, or a match cut by a limit. */
int hd_selector_matches(const hd_selector *s, const char *path, size_t len);

/* The literal prefixes every path it selects begins with (each
 * NUL-terminated, whole segments, borrowed for the selector's life; ""
 * when it may select any path): see "Index" above. Returns how many
 * (>= 1); distinct, none covering another. */
size_t hd_selector_prefixes(const hd_selector *s, const char *const **out);

#endif
