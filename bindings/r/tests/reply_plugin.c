/* A plugin evaluator for `mirai-daemon --evaluator plugin` that answers each task with bytes
 * the task carries: what follows the marker "mirai-test-reply:" and an 8-byte little-endian
 * length, anywhere in the task. The R tests use it to send an R host replies no R daemon
 * writes (malformed envelopes, truncated streams). It needs mirai.h, not libmirai. */
#include <stdint.h>
#include <string.h>

#include "mirai.h"

#define MARKER "mirai-test-reply:"

mirai_eval_status mirai_plugin_evaluate(void *userdata, const uint8_t *data, size_t len,
                                        bool everywhere, const mirai_interrupt *intr,
                                        mirai_output *out) {
  (void)userdata;
  (void)everywhere;
  (void)intr;
  size_t m = strlen(MARKER);
  for (size_t i = 0; i + m + 8 <= len; i++) {
    if (memcmp(data + i, MARKER, m) != 0) continue;
    uint64_t n = 0;
    for (int k = 0; k < 8; k++) n |= (uint64_t)data[i + m + k] << (8 * k);
    if (n > len - i - m - 8) break;
    mirai_output_set(out, data + i + m + 8, (size_t)n);
    return MIRAI_EVAL_STATUS_VALUE;
  }
  const char *msg = "no reply in the task";
  mirai_output_set(out, (const uint8_t *)msg, strlen(msg));
  return MIRAI_EVAL_STATUS_ERROR;
}
