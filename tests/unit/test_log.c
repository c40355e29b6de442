/*
 * Unit tests: hd_strerror and the logger (levels, line format, escaping,
 * gRPC core's lines).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <regex.h>
#include <unistd.h>

#include <cmocka.h>

#include "handlerd/handlerd.h"
#include "log_grpc.h"

#include <grpc/support/log.h>

static void test_strerror_describes_every_code(void **state) {
  (void)state;
  for (int e = HD_OK; e <= HD_ELAST; e++) {
    const char *s = hd_strerror((hd_err)e);
    assert_non_null(s);
    assert_true(strlen(s) > 0);
  }
  assert_string_equal(hd_strerror(HD_OK), "success");
  assert_string_equal(hd_strerror(HD_ELAST), "unknown error");
  assert_string_equal(hd_strerror((hd_err)1000), "unknown error");
  assert_string_not_equal(hd_strerror(HD_ENOKEY), hd_strerror(HD_ENOTFOUND));
}

static void test_log_level_parse_and_threshold(void **state) {
  hd_log_level lv = HD_LOG_ERROR;

  (void)state;
  assert_int_equal(hd_log_get_level(), HD_LOG_INFO); /* the default */
  assert_int_equal(hd_log_level_parse("debug", &lv), HD_OK);
  assert_int_equal(lv, HD_LOG_DEBUG);
  assert_int_equal(hd_log_level_parse("warn", &lv), HD_OK);
  assert_int_equal(lv, HD_LOG_WARN);
  assert_int_equal(hd_log_level_parse("error", &lv), HD_OK);
  assert_int_equal(lv, HD_LOG_ERROR);
  assert_int_equal(hd_log_level_parse("info", &lv), HD_OK);
  assert_int_equal(lv, HD_LOG_INFO);
  assert_int_equal(hd_log_level_parse("verbose", &lv), HD_EINVAL);
  assert_int_equal(lv, HD_LOG_INFO); /* untouched on failure */
  hd_log_set_level(HD_LOG_ERROR);
  assert_int_equal(hd_log_get_level(), HD_LOG_ERROR);
  hd_log_set_level(HD_LOG_INFO);
}

/* Points stderr at a temporary file until capture_end(), which returns
 * what was written (malloc'd). */
typedef struct capture {
  int fd, saved;
} capture;

static capture capture_begin(void) {
  char path[] = "/tmp/hd_test_log_XXXXXX";
  capture c = {mkstemp(path), dup(STDERR_FILENO)};

  assert_true(c.fd >= 0 && c.saved >= 0);
  unlink(path);
  dup2(c.fd, STDERR_FILENO);
  return c;
}

static char *capture_end(capture c) {
  char *buf = calloc(1, 4096);
  ssize_t n;

  assert_non_null(buf);
  dup2(c.saved, STDERR_FILENO);
  close(c.saved);
  n = pread(c.fd, buf, 4095, 0);
  close(c.fd);
  assert_true(n >= 0);
  return buf;
}

/* Runs hd_log with stderr pointed at a temporary file; returns what was
 * written (malloc'd). */
static char *capture_log(hd_log_level level, const char *msg) {
  capture c = capture_begin();

  hd_log(level, "%s", msg);
  return capture_end(c);
}

/* The message part of a text line: what follows " LEVEL ". */
static const char *text_message(const char *line, const char *level) {
  char tag[16];
  const char *p;

  snprintf(tag, sizeof(tag), " %s ", level);
  p = strstr(line, tag);
  assert_non_null(p);
  return p + strlen(tag);
}

static void test_log_writes_one_formatted_line(void **state) {
  regex_t re;
  char *out;

  (void)state;
  hd_log_set_level(HD_LOG_INFO);
  out = capture_log(HD_LOG_WARN, "disk\nfull");
  assert_int_equal(
      regcomp(
          &re,
          "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "
          "handlerd\\[[0-9]+\\] WARN disk\\\\nfull\n$",
          REG_EXTENDED),
      0);
  /* The embedded newline is escaped: one event, one line. */
  assert_int_equal(regexec(&re, out, 0, NULL, 0), 0);
  regfree(&re);
  free(out);
}

static void test_log_below_threshold_is_silent(void **state) {
  char *out;

  (void)state;
  hd_log_set_level(HD_LOG_INFO);
  out = capture_log(HD_LOG_DEBUG, "noise");
  assert_string_equal(out, "");
  free(out);
  hd_log_set_level(HD_LOG_DEBUG);
  out = capture_log(HD_LOG_DEBUG, "noise");
  assert_non_null(strstr(out, " DEBUG noise\n"));
  free(out);
  hd_log_set_level(HD_LOG_INFO);
}

static void test_log_long_message_is_not_truncated(void **state) {
  char msg[3000];
  char *out;

  (void)state;
  memset(msg, 'a', sizeof(msg) - 1);
  msg[sizeof(msg) - 1] = '\0';
  out = capture_log(HD_LOG_ERROR, msg);
  assert_non_null(strstr(out, msg));
  assert_int_equal(out[strlen(out) - 1], '\n');
  free(out);
}

static void test_log_text_escapes_every_control_character(void **state) {
  /* ESC sequences (colour, cursor, title), BEL, BS, DEL, TAB, CR, LF, NUL
   * cannot be passed through %s, so the C1 CSI (U+009B), a byte that is not
   * UTF-8 and plain UTF-8 that must stay as it is. */
  static const char msg[] = "a\x1b[31mred\x1b[0m\x1b]0;title\x07 b\x08\x7f"
                            "\tc\rd\ne \xc2\x9b"
                            "2J \xff f\xc3\xa9\xe2\x82\xac";
  static const char want[] = "a\\x1b[31mred\\x1b[0m\\x1b]0;title\\x07 "
                             "b\\x08\\x7f\\tc\\rd\\ne \\xc2\\x9b2J \\xff "
                             "f\xc3\xa9\xe2\x82\xac\n";
  char *out;

  (void)state;
  hd_log_set_level(HD_LOG_INFO);
  hd_log_set_format(HD_LOG_FORMAT_TEXT);
  out = capture_log(HD_LOG_INFO, msg);
  assert_string_equal(text_message(out, "INFO"), want);
  /* Nothing a terminal would obey, one line. */
  for (const unsigned char *p = (const unsigned char *)out; *p; p++) {
    assert_false(*p == 0x1b || *p == 0x7f || *p == 0x9b);
    assert_true(*p >= 0x20 || (*p == '\n' && p[1] == '\0'));
  }
  free(out);

  /* Every byte below 0x20 and DEL, one at a time. */
  for (int ch = 1; ch < 0x80; ch++) {
    char one[4] = {'<', (char)ch, '>', '\0'}, expect[16];
    if (ch >= 0x20 && ch != 0x7f)
      continue;
    if (ch == '\n')
      snprintf(expect, sizeof(expect), "<\\n>\n");
    else if (ch == '\r')
      snprintf(expect, sizeof(expect), "<\\r>\n");
    else if (ch == '\t')
      snprintf(expect, sizeof(expect), "<\\t>\n");
    else
      snprintf(expect, sizeof(expect), "<\\x%02x>\n", ch);
    out = capture_log(HD_LOG_ERROR, one);
    assert_string_equal(text_message(out, "ERROR"), expect);
    free(out);
  }
}

static void test_log_json_escapes_controls(void **state) {
  char *out;

  (void)state;
  hd_log_set_level(HD_LOG_INFO);
  hd_log_set_format(HD_LOG_FORMAT_JSON);
  out = capture_log(HD_LOG_WARN, "x\x1b[2J\xc2\x9b\x7f\"y\n");
  hd_log_set_format(HD_LOG_FORMAT_TEXT);
  assert_non_null(
      strstr(out, "\"msg\":\"x\\u001b[2J\\u009b\\u007f\\\"y\\u000a\"}\n"));
  for (const unsigned char *p = (const unsigned char *)out; *p; p++) {
    assert_false(*p == 0x1b || *p == 0x7f);
    assert_true(*p >= 0x20 || (*p == '\n' && p[1] == '\0'));
  }
  free(out);
}

static void test_grpc_lines_go_through_the_logger(void **state) {
  capture c;
  char *out;

  (void)state;
  hd_log_capture_grpc();
  gpr_set_log_verbosity(GPR_LOG_SEVERITY_DEBUG);
  hd_log_set_level(HD_LOG_INFO);
  hd_log_set_format(HD_LOG_FORMAT_JSON);
  c = capture_begin();
  gpr_log(GPR_ERROR, "bind failed: %s", "Address already in use\x1b");
  gpr_log(GPR_INFO, "an info line");
  gpr_log(GPR_DEBUG, "a debug line"); /* under the threshold */
  out = capture_end(c);
  hd_log_set_format(HD_LOG_FORMAT_TEXT);
  /* Two lines, both JSON objects of handlerd's shape, at the mapped
   * levels. */
  {
    regex_t re;
    assert_int_equal(
        regcomp(
            &re,
            "^\\{\"ts\":\"[^\"]+\",\"level\":\"error\",\"pid\":[0-9]+,"
            "\"msg\":\"grpc: bind failed: Address already in use"
            "\\\\u001b \\(test_log\\.c:[0-9]+\\)\"\\}\n"
            "\\{\"ts\":\"[^\"]+\",\"level\":\"info\",\"pid\":[0-9]+,"
            "\"msg\":\"grpc: an info line \\(test_log\\.c:[0-9]+\\)\"\\}\n$",
            REG_EXTENDED),
        0);
    if (regexec(&re, out, 0, NULL, 0) != 0)
      fail_msg("not handlerd's JSON lines: %s", out);
    regfree(&re);
  }
  free(out);

  /* Text format: handlerd's line, escaped. */
  c = capture_begin();
  gpr_log(GPR_ERROR, "two\nlines");
  out = capture_end(c);
  assert_non_null(strstr(out, " ERROR grpc: two\\nlines (test_log.c:"));
  assert_non_null(strchr(out, '\n'));
  assert_string_equal(strchr(out, '\n'), "\n");
  free(out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_strerror_describes_every_code),
      cmocka_unit_test(test_log_level_parse_and_threshold),
      cmocka_unit_test(test_log_writes_one_formatted_line),
      cmocka_unit_test(test_log_below_threshold_is_silent),
      cmocka_unit_test(test_log_long_message_is_not_truncated),
      cmocka_unit_test(test_log_text_escapes_every_control_character),
      cmocka_unit_test(test_log_json_escapes_controls),
      cmocka_unit_test(test_grpc_lines_go_through_the_logger),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
