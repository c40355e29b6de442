/*
 * Unit tests: hd_strerror and the logger (levels, line format).
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

/* Runs hd_log with stderr pointed at a temporary file; returns what was
 * written (malloc'd). */
static char *capture_log(hd_log_level level, const char *msg) {
  char path[] = "/tmp/hd_test_log_XXXXXX";
  int fd = mkstemp(path), saved = dup(STDERR_FILENO);
  char *buf = calloc(1, 4096);
  ssize_t n;

  assert_true(fd >= 0 && saved >= 0 && buf != NULL);
  unlink(path);
  dup2(fd, STDERR_FILENO);
  hd_log(level, "%s", msg);
  dup2(saved, STDERR_FILENO);
  close(saved);
  n = pread(fd, buf, 4095, 0);
  close(fd);
  assert_true(n >= 0);
  return buf;
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
          "handlerd\\[[0-9]+\\] WARN disk full\n$",
          REG_EXTENDED),
      0);
  /* The embedded newline is flattened: one event, one line. */
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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_strerror_describes_every_code),
      cmocka_unit_test(test_log_level_parse_and_threshold),
      cmocka_unit_test(test_log_writes_one_formatted_line),
      cmocka_unit_test(test_log_below_threshold_is_silent),
      cmocka_unit_test(test_log_long_message_is_not_truncated),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
