/*
 * Prints the host's TSC frequency in kHz, measured against CLOCK_MONOTONIC_RAW.
 *
 * Why: a TCG guest's TSC ticks at the host TSC rate, and a microvm has neither HPET nor ACPI PM timer,
 * so the guest kernel can only calibrate its TSC against the PIT. On a loaded host that calibration
 * fails ("tsc: Unable to calibrate against PIT ... Marking TSC unstable"), and the kernel then hangs
 * before printing anything more (measured: 10 of 12 boots under load). Passing the frequency as
 * `tsc_early_khz=` skips the calibration.
 */
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <x86intrin.h>

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* A (time, tsc) pair read as close together as possible: the tightest of a few tries. */
static void pair(int64_t *ns, uint64_t *tsc) {
  int64_t best = INT64_MAX;
  for (int i = 0; i < 16; i++) {
    uint64_t a = __rdtsc();
    int64_t t = now_ns();
    uint64_t b = __rdtsc();
    if ((int64_t)(b - a) < best) {
      best = (int64_t)(b - a);
      *ns = t;
      *tsc = a + (b - a) / 2;
    }
  }
}

int main(void) {
  double samples[3];
  for (int s = 0; s < 3; s++) {
    int64_t t0, t1;
    uint64_t c0, c1;
    pair(&t0, &c0);
    struct timespec d = {0, 20 * 1000 * 1000};
    nanosleep(&d, NULL);
    pair(&t1, &c1);
    samples[s] = (double)(c1 - c0) * 1e6 / (double)(t1 - t0); /* ticks per ms = kHz */
  }
  /* median of three */
  double a = samples[0], b = samples[1], c = samples[2];
  double m = a > b ? (b > c ? b : (a > c ? c : a)) : (a > c ? a : (b > c ? c : b));
  printf("%.0f\n", m);
  return 0;
}
