/*
 * Fault injection for vault-server/tests/faults.rs: an LD_PRELOAD shim that
 * makes every write to a file under $DZL_FAULT_DIR fail with EROFS (the
 * store's file system gone read-only) while the file named by
 * $DZL_FAULT_FLAG exists. Writes elsewhere (logs, sockets) are untouched.
 * With $DZL_FAULT_ONLY_SYNC set, writes succeed and only fsync/fdatasync
 * fail, with EIO (a disk that loses a flush).
 *
 *   cc -shared -fPIC -O2 -o libunwritable.so unwritable.c -ldl
 *   LD_PRELOAD=./libunwritable.so DZL_FAULT_DIR=/data DZL_FAULT_FLAG=/tmp/ro dzl-vault serve …
 *
 * SQLite (bundled in the binary) reaches the C library through these
 * symbols, so interposing them is enough: pwrite64/pwrite/write for pages,
 * fsync/fdatasync for durability, ftruncate for WAL resets.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static int faulty(int fd) {
    const char *dir = getenv("DZL_FAULT_DIR");
    const char *flag = getenv("DZL_FAULT_FLAG");
    if (dir == NULL || flag == NULL || access(flag, F_OK) != 0) {
        return 0;
    }
    char link[64];
    char path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) {
        return 0;
    }
    path[n] = '\0';
    size_t len = strlen(dir);
    return strncmp(path, dir, len) == 0 && (path[len] == '/' || path[len] == '\0');
}

typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef int (*sync_fn)(int);
typedef int (*truncate_fn)(int, off_t);

#define REAL(name, type) \
    static type real_##name; \
    if (real_##name == NULL) { real_##name = (type)dlsym(RTLD_NEXT, #name); }

#define REFUSE(fd) \
    if (getenv("DZL_FAULT_ONLY_SYNC") == NULL && faulty(fd)) { errno = EROFS; return -1; }

#define REFUSE_SYNC(fd) \
    if (faulty(fd)) { errno = getenv("DZL_FAULT_ONLY_SYNC") ? EIO : EROFS; return -1; }

ssize_t write(int fd, const void *buf, size_t count) {
    REAL(write, write_fn);
    REFUSE(fd);
    return real_write(fd, buf, count);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    REAL(pwrite, pwrite_fn);
    REFUSE(fd);
    return real_pwrite(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset) {
    REAL(pwrite64, pwrite_fn);
    REFUSE(fd);
    return real_pwrite64(fd, buf, count, offset);
}

int fsync(int fd) {
    REAL(fsync, sync_fn);
    REFUSE_SYNC(fd);
    return real_fsync(fd);
}

int fdatasync(int fd) {
    REAL(fdatasync, sync_fn);
    REFUSE_SYNC(fd);
    return real_fdatasync(fd);
}

int ftruncate(int fd, off_t length) {
    REAL(ftruncate, truncate_fn);
    REFUSE(fd);
    return real_ftruncate(fd, length);
}

int ftruncate64(int fd, off_t length) {
    REAL(ftruncate64, truncate_fn);
    REFUSE(fd);
    return real_ftruncate64(fd, length);
}
