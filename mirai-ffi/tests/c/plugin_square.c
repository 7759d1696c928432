/* A plugin evaluator for `mirai-daemon --evaluator plugin`: squares an integer given as text.
 * Built as a shared library; it needs mirai.h but not libmirai (mirai-daemon exports it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mirai.h"

static uint64_t my_id;

void mirai_plugin_init(void *userdata, uint64_t daemon_id, const uint32_t *stream,
                       const uint8_t *blob, size_t len) {
  (void)userdata;
  (void)stream;
  (void)blob;
  (void)len;
  my_id = daemon_id;
}

mirai_eval_status mirai_plugin_evaluate(void *userdata, const uint8_t *data,
                                        size_t len, bool everywhere,
                                        const mirai_interrupt *intr,
                                        mirai_output *out) {
  (void)userdata;
  (void)everywhere;
  (void)intr;
  char text[32] = {0};
  if (len == 0 || len >= sizeof text || my_id == 0) {
    return MIRAI_EVAL_STATUS_ERROR;
  }
  memcpy(text, data, len);
  char *end = NULL;
  long x = strtol(text, &end, 10);
  if (*end != '\0') {
    const char *msg = "not an integer";
    mirai_output_set(out, (const uint8_t *)msg, strlen(msg));
    return MIRAI_EVAL_STATUS_ERROR;
  }
  char result[32];
  int n = snprintf(result, sizeof result, "%ld", x * x);
  mirai_output_set(out, (const uint8_t *)result, (size_t)n);
  return MIRAI_EVAL_STATUS_VALUE;
}
