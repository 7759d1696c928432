/* What local_url() and host_url() are made of: random socket names and the machine's
 * addresses; and random secrets. */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rmirai.h"


/* The machine's IPv4 addresses, loopback excluded, named by interface. */
SEXP rmirai_interfaces(void) {
  /* Gathered first, so no R allocation (which may raise an error) happens while the list from
   * getifaddrs is held. */
  enum { MAX = 64 };
  char addr[MAX][INET_ADDRSTRLEN], name[MAX][IF_NAMESIZE + 1];
  int n = 0;
  struct ifaddrs *all = NULL;
  if (getifaddrs(&all) == 0) {
    for (struct ifaddrs *i = all; i && n < MAX; i = i->ifa_next) {
      if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || (i->ifa_flags & IFF_LOOPBACK)) continue;
      inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, addr[n], sizeof addr[n]);
      snprintf(name[n], sizeof name[n], "%s", i->ifa_name);
      n++;
    }
    freeifaddrs(all);
  }
  SEXP out = PROTECT(Rf_allocVector(STRSXP, n));
  SEXP names = PROTECT(Rf_allocVector(STRSXP, n));
  for (int k = 0; k < n; k++) {
    SET_STRING_ELT(out, k, Rf_mkChar(addr[k]));
    SET_STRING_ELT(names, k, Rf_mkChar(name[k]));
  }
  Rf_setAttrib(out, R_NamesSymbol, names);
  UNPROTECT(2);
  return out;
}

/* `len` bytes from the system's random source (/dev/urandom). */
static void random_bytes(unsigned char *bytes, size_t len) {
  FILE *f = fopen("/dev/urandom", "rb");
  size_t got = f ? fread(bytes, 1, len, f) : 0;
  if (f) fclose(f);
  if (got != len) Rf_error("cannot read /dev/urandom");
}

/* `n` random characters of `alphabet`. */
static SEXP random_string(SEXP n, const char *alphabet, size_t size) {
  int len = Rf_asInteger(n);
  if (len < 1 || len > 64) Rf_error("a name of 1 to 64 characters");
  unsigned char bytes[64];
  random_bytes(bytes, (size_t)len);
  char name[65];
  for (int i = 0; i < len; i++) name[i] = alphabet[bytes[i] % size];
  name[len] = 0;
  return Rf_mkString(name);
}

/* `n` random letters and digits: socket names. */
SEXP rmirai_random_name(SEXP n) {
  static const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  return random_string(n, alphabet, sizeof alphabet - 1);
}

/* The value of MIRAI_SECRET (NULL if unset), taken out of the environment. Unsetting alone is
 * not enough: a variable the process started with lives in the memory /proc/<pid>/environ
 * shows, which unsetenv() leaves as it was, so its bytes are overwritten first. */
SEXP rmirai_take_secret(void) {
  char *value = getenv("MIRAI_SECRET");
  if (value == NULL) return R_NilValue;
  SEXP out = PROTECT(Rf_mkString(value));
  memset(value, 'x', strlen(value));
  unsetenv("MIRAI_SECRET");
  UNPROTECT(1);
  return out;
}

/* `n` random hex digits: secrets (16 divides 256, so every digit is equally likely). */
SEXP rmirai_random_hex(SEXP n) {
  static const char alphabet[] = "0123456789abcdef";
  return random_string(n, alphabet, sizeof alphabet - 1);
}
