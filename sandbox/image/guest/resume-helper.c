/*
 * mcpvisor resume helper: run by the guest agent right after a snapshot resume.
 *
 *   resume-helper <epoch_ms>  < seed-bytes      one shot
 *   resume-helper --serve                       persistent: per stdin line "<epoch_ms> <seed hex>"
 *                                               answers "ok" or "error: <reason>" on stdout
 *
 * Sets CLOCK_REALTIME to the host's clock and mixes the host's fresh seed into the kernel's entropy pool,
 * then forces the CRNG to reseed, so clones of one template neither share a clock nor random state.
 * A static C binary because it sits on the resume critical path: under TCG spawning it costs a few ms,
 * another node process would cost seconds. Needs CAP_SYS_TIME and CAP_SYS_ADMIN (the agent is root).
 * One shot: exits 0 on success; on any failure prints the reason to stderr and exits 1.
 * The agent starts the --serve mode at boot, so the process already exists in the template snapshot and
 * a resume costs a pipe round trip instead of fork+exec of node's large address space (18-80 ms under TCG).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define MAX_SEED 4096

struct seed_entropy {
  int entropy_count; /* bits credited */
  int buf_size;      /* bytes */
  unsigned char buf[MAX_SEED];
};

static char errbuf[512];

static void note(const char *what) {
  size_t used = strlen(errbuf);
  snprintf(errbuf + used, sizeof errbuf - used, "%s%s: %s", used ? "; " : "", what, strerror(errno));
}

/*
 * Mixes in and credits the seed, forces a CRNG reseed, and sets the clock. Both halves are attempted
 * even if one fails (a clone with a stale clock must still not share the template's random state).
 */
static int apply(long long ms, const unsigned char *buf, size_t len) {
  static struct seed_entropy seed;
  static int fd = -1;
  errbuf[0] = '\0';
  if (ms <= 0) {
    snprintf(errbuf, sizeof errbuf, "bad epoch_ms %lld", ms);
    return -1;
  }
  if (len < 16 || len > MAX_SEED) {
    snprintf(errbuf, sizeof errbuf, "seed must be 16..%d bytes, got %zu", MAX_SEED, len);
    return -1;
  }
  if (fd < 0) fd = open("/dev/urandom", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    note("open /dev/urandom");
  } else {
    memcpy(seed.buf, buf, len);
    seed.buf_size = (int)len;
    seed.entropy_count = (int)len * 8;
    if (ioctl(fd, RNDADDENTROPY, &seed) != 0) note("ioctl RNDADDENTROPY");
    else if (ioctl(fd, RNDRESEEDCRNG) != 0) note("ioctl RNDRESEEDCRNG");
    memset(seed.buf, 0, len);
  }
  struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
  if (clock_settime(CLOCK_REALTIME, &ts) != 0) note("clock_settime");
  return errbuf[0] ? -1 : 0;
}

static int parse_ms(const char *s, long long *out) {
  char *end = NULL;
  errno = 0;
  *out = strtoll(s, &end, 10);
  return errno == 0 && end != s && (*end == '\0' || *end == ' ' || *end == '\n') ? 0 : -1;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int serve(void) {
  static unsigned char seed[MAX_SEED];
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  setvbuf(stdout, NULL, _IONBF, 0);
  while ((n = getline(&line, &cap, stdin)) >= 0) {
    long long ms = 0;
    size_t len = 0;
    int ok = parse_ms(line, &ms) == 0;
    char *hex = ok ? strchr(line, ' ') : NULL;
    if (!hex) ok = 0;
    if (ok) {
      for (hex++; hexval(hex[0]) >= 0 && hexval(hex[1]) >= 0 && len < MAX_SEED; hex += 2) {
        seed[len++] = (unsigned char)(hexval(hex[0]) << 4 | hexval(hex[1]));
      }
      if (*hex != '\n' && *hex != '\0') ok = 0;
    }
    if (!ok) {
      printf("error: bad request line\n");
    } else if (apply(ms, seed, len) == 0) {
      printf("ok\n");
    } else {
      printf("error: %s\n", errbuf);
    }
  }
  free(line);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--serve") == 0) return serve();
  long long ms = 0;
  if (argc != 2 || parse_ms(argv[1], &ms) != 0 || argv[1][strcspn(argv[1], " \n")] != '\0') {
    fprintf(stderr, "usage: resume-helper <epoch_ms> < seed | resume-helper --serve\n");
    return 1;
  }
  static unsigned char buf[MAX_SEED + 1];
  size_t len = 0;
  while (len < sizeof buf) {
    ssize_t n = read(0, buf + len, sizeof buf - len);
    if (n < 0) {
      if (errno == EINTR) continue;
      fprintf(stderr, "resume-helper: read seed: %s\n", strerror(errno));
      return 1;
    }
    if (n == 0) break;
    len += (size_t)n;
  }
  if (apply(ms, buf, len) != 0) {
    fprintf(stderr, "resume-helper: %s\n", errbuf);
    return 1;
  }
  return 0;
}
