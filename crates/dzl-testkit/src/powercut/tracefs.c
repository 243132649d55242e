/*
 * The power-cut harness's LD_PRELOAD library (dzl_testkit::powercut):
 * records, in order, every change the process makes to the files of one
 * directory, and every flush, so that the harness can rebuild the files as
 * a power cut at any moment would have left them.
 *
 *   cc -shared -fPIC -O2 -o libtracefs.so tracefs.c -ldl -lpthread
 *   LD_PRELOAD=./libtracefs.so DZL_PC_DIR=/data DZL_PC_LOG=/tmp/trace dzl-vault serve ...
 *
 * Environment:
 *   DZL_PC_DIR           the directory watched (absolute, canonical); unset:
 *                        the library does nothing
 *   DZL_PC_LOG           the trace file (appended to)
 *   DZL_PC_CUT_AT_SYNC   N: SIGKILL the process right after its Nth flush
 *                        (fsync/fdatasync) under the directory has returned
 *                        and been recorded, before the caller learns of it
 *   DZL_PC_CUT_AT_WRITE  N: the same, right after its Nth write
 *   DZL_PC_CUT_FILE      a name: only flushes and writes of this file count
 *   DZL_PC_ARM           a path: flushes and writes are counted for the cut
 *                        only once it exists (the harness creates it when
 *                        the server is ready); an ARMED record marks the
 *                        moment
 *
 * A record is appended after the call it describes has succeeded, under
 * one lock, so whatever happened before a flush returned (in its own thread,
 * or in another that handed over to it) precedes the flush in the trace.
 * Records: a 24-byte header {u32 magic "DZPC", u8 kind, u8 name length,
 * u8 second name length, u8 0, u64 offset, u64 length} (little-endian),
 * the file name(s) relative to the directory, then `length` bytes of data
 * for WRITE. A record cut short by the kill is the trace's end.
 *
 * What is traced: pwrite64/pwrite/write/writev/pwritev(2) (SQLite writes
 * its pages with pwrite64), ftruncate(64), fsync/fdatasync of a file or of
 * the directory itself, files created by open/openat/creat, unlink(at),
 * rename(at)(2). The -shm files (SQLite's shared-memory index, rebuilt
 * after a crash) are not traced: a power cut loses them. A writable shared
 * mapping of a traced file would escape the trace, so it is recorded as
 * UNTRACEABLE and the harness refuses such a trace.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum kind {
    K_WRITE = 1,
    K_TRUNCATE = 2,
    K_SYNC = 3,
    K_DIRSYNC = 4,
    K_CREATE = 5,
    K_UNLINK = 6,
    K_RENAME = 7,
    K_ARMED = 8,
    K_UNTRACEABLE = 9,
};

#define MAGIC 0x43505a44u /* "DZPC" */
#define MAX_FD 65536
#define MAX_NAMES 256
#define UNTRACKED (-1)
#define IS_DIR 1
/* fd states: 0 unknown, -1 untracked, 1 the directory, 2 + i names[i] */

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef int (*creat_fn)(const char *, mode_t);
typedef int (*close_fn)(int);
typedef int (*dup2_fn)(int, int);
typedef int (*dup3_fn)(int, int, int);
typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);
typedef ssize_t (*pwritev_fn)(int, const struct iovec *, int, off_t);
typedef ssize_t (*pwritev2_fn)(int, const struct iovec *, int, off_t, int);
typedef int (*ftruncate_fn)(int, off_t);
typedef int (*truncate_fn)(const char *, off_t);
typedef int (*sync_fn)(int);
typedef int (*unlink_fn)(const char *);
typedef int (*unlinkat_fn)(int, const char *, int);
typedef int (*rename_fn)(const char *, const char *);
typedef int (*renameat_fn)(int, const char *, int, const char *);
typedef int (*renameat2_fn)(int, const char *, int, const char *, unsigned int);
typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);

static open_fn real_open, real_open64;
static openat_fn real_openat, real_openat64;
static creat_fn real_creat, real_creat64;
static close_fn real_close;
static dup2_fn real_dup2;
static dup3_fn real_dup3;
static write_fn real_write;
static pwrite_fn real_pwrite, real_pwrite64;
static writev_fn real_writev;
static pwritev_fn real_pwritev, real_pwritev64;
static pwritev2_fn real_pwritev2;
static ftruncate_fn real_ftruncate, real_ftruncate64;
static truncate_fn real_truncate, real_truncate64;
static sync_fn real_fsync, real_fdatasync;
static unlink_fn real_unlink;
static unlinkat_fn real_unlinkat;
static rename_fn real_rename;
static renameat_fn real_renameat;
static renameat2_fn real_renameat2;
static mmap_fn real_mmap, real_mmap64;

static char dir[PATH_MAX];
static size_t dir_len;
static int active;
static int log_fd = -1;
static long cut_at_sync, cut_at_write;
static char arm_path[PATH_MAX];
static atomic_int armed;
static long syncs, writes;
static char cut_file[NAME_MAX + 1];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static _Atomic int fd_state[MAX_FD];
static _Atomic unsigned long fd_ino[MAX_FD];
static char names[MAX_NAMES][NAME_MAX + 1];
static int name_count;

#define RESOLVE(var, name) var = (__typeof__(var))dlsym(RTLD_NEXT, name)

static void init(void) {
    RESOLVE(real_open, "open");
    RESOLVE(real_open64, "open64");
    RESOLVE(real_openat, "openat");
    RESOLVE(real_openat64, "openat64");
    RESOLVE(real_creat, "creat");
    RESOLVE(real_creat64, "creat64");
    RESOLVE(real_close, "close");
    RESOLVE(real_dup2, "dup2");
    RESOLVE(real_dup3, "dup3");
    RESOLVE(real_write, "write");
    RESOLVE(real_pwrite, "pwrite");
    RESOLVE(real_pwrite64, "pwrite64");
    RESOLVE(real_writev, "writev");
    RESOLVE(real_pwritev, "pwritev");
    RESOLVE(real_pwritev64, "pwritev64");
    RESOLVE(real_pwritev2, "pwritev2");
    RESOLVE(real_ftruncate, "ftruncate");
    RESOLVE(real_ftruncate64, "ftruncate64");
    RESOLVE(real_truncate, "truncate");
    RESOLVE(real_truncate64, "truncate64");
    RESOLVE(real_fsync, "fsync");
    RESOLVE(real_fdatasync, "fdatasync");
    RESOLVE(real_unlink, "unlink");
    RESOLVE(real_unlinkat, "unlinkat");
    RESOLVE(real_rename, "rename");
    RESOLVE(real_renameat, "renameat");
    RESOLVE(real_renameat2, "renameat2");
    RESOLVE(real_mmap, "mmap");
    RESOLVE(real_mmap64, "mmap64");

    const char *d = getenv("DZL_PC_DIR");
    const char *l = getenv("DZL_PC_LOG");
    if (d == NULL || l == NULL || d[0] != '/' || strlen(d) >= sizeof dir) {
        return;
    }
    strcpy(dir, d);
    dir_len = strlen(dir);
    while (dir_len > 1 && dir[dir_len - 1] == '/') {
        dir[--dir_len] = '\0';
    }
    log_fd = real_open(l, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0) {
        return;
    }
    const char *c = getenv("DZL_PC_CUT_AT_SYNC");
    cut_at_sync = c ? strtol(c, NULL, 10) : 0;
    const char *w = getenv("DZL_PC_CUT_AT_WRITE");
    cut_at_write = w ? strtol(w, NULL, 10) : 0;
    const char *f = getenv("DZL_PC_CUT_FILE");
    if (f != NULL && strlen(f) < sizeof cut_file) {
        strcpy(cut_file, f);
    }
    const char *a = getenv("DZL_PC_ARM");
    if (a != NULL && strlen(a) < sizeof arm_path) {
        strcpy(arm_path, a);
    } else {
        atomic_store(&armed, 1);
    }
    active = 1;
}

__attribute__((constructor)) static void ctor(void) { pthread_once(&once, init); }

#define INIT() pthread_once(&once, init)

/* Appends one record; the caller holds `lock`. */
static void put(int kind, const char *name, const char *name2, uint64_t off,
                const void *data, uint64_t len) {
    unsigned char h[24];
    uint32_t magic = MAGIC;
    size_t n1 = name ? strlen(name) : 0, n2 = name2 ? strlen(name2) : 0;
    memcpy(h, &magic, 4);
    h[4] = (unsigned char)kind;
    h[5] = (unsigned char)n1;
    h[6] = (unsigned char)n2;
    h[7] = 0;
    memcpy(h + 8, &off, 8);
    memcpy(h + 16, &len, 8);
    struct iovec v[4] = {
        {h, sizeof h},
        {(void *)name, n1},
        {(void *)name2, n2},
        {(void *)data, data ? len : 0},
    };
    size_t total = 0;
    for (int i = 0; i < 4; i++) {
        total += v[i].iov_len;
    }
    /* One writev per record; loop only on a short write. */
    ssize_t done = real_writev(log_fd, v, 4);
    if (done >= 0 && (size_t)done < total) {
        const unsigned char *p;
        size_t skip = (size_t)done;
        for (int i = 0; i < 4; i++) {
            if (skip >= v[i].iov_len) {
                skip -= v[i].iov_len;
                continue;
            }
            p = (const unsigned char *)v[i].iov_base + skip;
            size_t left = v[i].iov_len - skip;
            skip = 0;
            while (left > 0) {
                ssize_t w = real_write(log_fd, p, left);
                if (w <= 0) {
                    return;
                }
                p += w;
                left -= (size_t)w;
            }
        }
    }
}

static void record(int kind, const char *name, const char *name2, uint64_t off,
                   const void *data, uint64_t len) {
    pthread_mutex_lock(&lock);
    put(kind, name, name2, off, data, len);
    pthread_mutex_unlock(&lock);
}

/* The name under the directory of an absolute path: NULL if elsewhere (or
 * deeper), "" for the directory itself. */
static const char *name_in_dir(const char *path) {
    if (strncmp(path, dir, dir_len) != 0) {
        return NULL;
    }
    if (path[dir_len] == '\0') {
        return "";
    }
    if (path[dir_len] != '/' || strchr(path + dir_len + 1, '/') != NULL) {
        return NULL;
    }
    return path + dir_len + 1;
}

static int ends_with(const char *s, const char *tail) {
    size_t n = strlen(s), t = strlen(tail);
    return n >= t && strcmp(s + n - t, tail) == 0;
}

/* The state for a path: UNTRACKED, IS_DIR or 2 + a name's index. */
static int classify_path(const char *path) {
    const char *name = name_in_dir(path);
    if (name == NULL || ends_with(name, "-shm") || ends_with(name, " (deleted)") ||
        strlen(name) > 255) {
        return UNTRACKED;
    }
    if (name[0] == '\0') {
        return IS_DIR;
    }
    pthread_mutex_lock(&lock);
    int i;
    for (i = 0; i < name_count; i++) {
        if (strcmp(names[i], name) == 0) {
            break;
        }
    }
    if (i == name_count) {
        if (name_count == MAX_NAMES) {
            pthread_mutex_unlock(&lock);
            return UNTRACKED;
        }
        strcpy(names[name_count++], name);
    }
    pthread_mutex_unlock(&lock);
    return 2 + i;
}

/* An absolute form of `path` as opened relative to `dirfd`. */
static int absolute(int dirfd, const char *path, char *out) {
    if (path[0] == '/') {
        if (strlen(path) >= PATH_MAX) {
            return -1;
        }
        strcpy(out, path);
        return 0;
    }
    char base[PATH_MAX];
    if (dirfd == AT_FDCWD) {
        if (getcwd(base, sizeof base) == NULL) {
            return -1;
        }
    } else {
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
        ssize_t n = readlink(link, base, sizeof base - 1);
        if (n <= 0) {
            return -1;
        }
        base[n] = '\0';
    }
    size_t b = strlen(base), n = strlen(path);
    if (b + 1 + n >= PATH_MAX) {
        return -1;
    }
    memcpy(out, base, b);
    out[b] = '/';
    memcpy(out + b + 1, path, n + 1);
    return 0;
}

static unsigned long inode_of(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) {
        return 0;
    }
    return (unsigned long)st.st_ino ^ ((unsigned long)st.st_dev << 40);
}

/* The state of `fd`, found from /proc/self/fd when not known; a remembered
 * state is trusted only while the fd still names the same inode. */
static int classify_fd(int fd) {
    if (!active || fd < 0) {
        return UNTRACKED;
    }
    int st = fd < MAX_FD ? atomic_load(&fd_state[fd]) : 0;
    unsigned long ino = inode_of(fd);
    if (st != 0 && atomic_load(&fd_ino[fd]) == ino) {
        return st;
    }
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) {
        return UNTRACKED;
    }
    path[n] = '\0';
    st = classify_path(path);
    if (fd < MAX_FD) {
        atomic_store(&fd_ino[fd], ino);
        atomic_store(&fd_state[fd], st);
    }
    return st;
}

static void forget_fd(int fd) {
    if (fd >= 0 && fd < MAX_FD) {
        atomic_store(&fd_state[fd], 0);
    }
}

static const char *name_of(int st) { return st >= 2 ? names[st - 2] : ""; }

/* Whether a flush or write of `st` counts toward a cut. */
static int counts(int st) { return cut_file[0] == '\0' || strcmp(name_of(st), cut_file) == 0; }

/* Notices the arm file; the caller holds `lock`. */
static void check_armed(void) {
    if (!atomic_load(&armed) && access(arm_path, F_OK) == 0) {
        atomic_store(&armed, 1);
        put(K_ARMED, NULL, NULL, 0, NULL, 0);
    }
}

/* The cut: called without `lock`, so the other threads' records are whole
 * (one being written as the kill lands is cut short, and left out). */
static void cut_now(void) {
    kill(getpid(), SIGKILL);
    for (;;) {
        pause();
    }
}

static void after_sync(int st) {
    int cut = 0;
    pthread_mutex_lock(&lock);
    put(st == IS_DIR ? K_DIRSYNC : K_SYNC, name_of(st), NULL, 0, NULL, 0);
    check_armed();
    if (atomic_load(&armed) && cut_at_sync > 0 && counts(st) && ++syncs == cut_at_sync) {
        cut = 1;
    }
    pthread_mutex_unlock(&lock);
    if (cut) {
        cut_now();
    }
}

/* Counts one write to `st` toward DZL_PC_CUT_AT_WRITE; the caller holds
 * `lock`. */
static int count_write(int st) {
    check_armed();
    return atomic_load(&armed) && cut_at_write > 0 && counts(st) && ++writes == cut_at_write;
}

/* open with O_CREAT: the existence test, the open and the CREATE record
 * happen under the lock, so no write to the new file precedes its CREATE. */
static int traced_open(int dirfd, const char *path, int flags, mode_t mode,
                       int (*op)(int, const char *, int, mode_t)) {
    INIT();
    if (!active) {
        return op(dirfd, path, flags, mode);
    }
    char abs[PATH_MAX];
    int st = absolute(dirfd, path, abs) == 0 ? classify_path(abs) : UNTRACKED;
    if (st < 2 || !(flags & (O_CREAT | O_TRUNC))) {
        int fd = op(dirfd, path, flags, mode);
        if (fd >= 0 && fd < MAX_FD) {
            atomic_store(&fd_ino[fd], inode_of(fd));
            atomic_store(&fd_state[fd], st);
        }
        return fd;
    }
    pthread_mutex_lock(&lock);
    struct stat before;
    int existed = stat(abs, &before) == 0;
    int fd = op(dirfd, path, flags, mode);
    if (fd >= 0) {
        if (!existed) {
            put(K_CREATE, name_of(st), NULL, 0, NULL, 0);
        } else if ((flags & O_TRUNC) && before.st_size > 0) {
            put(K_TRUNCATE, name_of(st), NULL, 0, NULL, 0);
        }
        if (fd < MAX_FD) {
            atomic_store(&fd_ino[fd], inode_of(fd));
            atomic_store(&fd_state[fd], st);
        }
    }
    pthread_mutex_unlock(&lock);
    return fd;
}

static int op_open(int dirfd, const char *p, int f, mode_t m) {
    (void)dirfd;
    return real_open(p, f, m);
}
static int op_open64(int dirfd, const char *p, int f, mode_t m) {
    (void)dirfd;
    return real_open64(p, f, m);
}
static int op_openat(int dirfd, const char *p, int f, mode_t m) {
    return real_openat(dirfd, p, f, m);
}
static int op_openat64(int dirfd, const char *p, int f, mode_t m) {
    return real_openat64(dirfd, p, f, m);
}

#define MODE_ARG(flags)                                              \
    mode_t mode = 0;                                                 \
    if ((flags) & (O_CREAT | O_TMPFILE)) {                           \
        va_list ap;                                                  \
        va_start(ap, flags);                                         \
        mode = (mode_t)va_arg(ap, int);                              \
        va_end(ap);                                                  \
    }

int open(const char *path, int flags, ...) {
    MODE_ARG(flags);
    return traced_open(AT_FDCWD, path, flags, mode, op_open);
}

int open64(const char *path, int flags, ...) {
    MODE_ARG(flags);
    return traced_open(AT_FDCWD, path, flags, mode, op_open64);
}

int openat(int dirfd, const char *path, int flags, ...) {
    MODE_ARG(flags);
    return traced_open(dirfd, path, flags, mode, op_openat);
}

int openat64(int dirfd, const char *path, int flags, ...) {
    MODE_ARG(flags);
    return traced_open(dirfd, path, flags, mode, op_openat64);
}

int creat(const char *path, mode_t mode) {
    return traced_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, op_open);
}

int creat64(const char *path, mode_t mode) {
    return traced_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, op_open64);
}

int close(int fd) {
    INIT();
    forget_fd(fd);
    return real_close(fd);
}

int dup2(int oldfd, int newfd) {
    INIT();
    forget_fd(newfd);
    return real_dup2(oldfd, newfd);
}

int dup3(int oldfd, int newfd, int flags) {
    INIT();
    forget_fd(newfd);
    return real_dup3(oldfd, newfd, flags);
}

static void after_write(int st, off_t off, const void *buf, ssize_t n) {
    if (st < 2 || n <= 0) {
        return;
    }
    pthread_mutex_lock(&lock);
    put(K_WRITE, name_of(st), NULL, (uint64_t)off, buf, (uint64_t)n);
    int cut = count_write(st);
    pthread_mutex_unlock(&lock);
    if (cut) {
        cut_now();
    }
}

static void after_writev(int st, off_t off, const struct iovec *iov, int cnt, ssize_t n) {
    if (st < 2 || n <= 0) {
        return;
    }
    pthread_mutex_lock(&lock);
    for (int i = 0; i < cnt && n > 0; i++) {
        size_t len = iov[i].iov_len < (size_t)n ? iov[i].iov_len : (size_t)n;
        if (len > 0) {
            put(K_WRITE, name_of(st), NULL, (uint64_t)off, iov[i].iov_base, len);
        }
        off += (off_t)len;
        n -= (ssize_t)len;
    }
    int cut = count_write(st);
    pthread_mutex_unlock(&lock);
    if (cut) {
        cut_now();
    }
}

/* Where a write(2) on `fd` lands: the end for O_APPEND, else the offset. */
static off_t write_position(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_APPEND)) {
        struct stat st;
        return fstat(fd, &st) == 0 ? st.st_size : 0;
    }
    return lseek(fd, 0, SEEK_CUR);
}

ssize_t write(int fd, const void *buf, size_t count) {
    INIT();
    int st = classify_fd(fd);
    if (st < 2) {
        return real_write(fd, buf, count);
    }
    off_t off = write_position(fd);
    ssize_t n = real_write(fd, buf, count);
    after_write(st, off, buf, n);
    return n;
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t off) {
    INIT();
    ssize_t n = real_pwrite(fd, buf, count, off);
    after_write(classify_fd(fd), off, buf, n);
    return n;
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t off) {
    INIT();
    ssize_t n = real_pwrite64(fd, buf, count, off);
    after_write(classify_fd(fd), off, buf, n);
    return n;
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    INIT();
    int st = classify_fd(fd);
    if (st < 2) {
        return real_writev(fd, iov, cnt);
    }
    off_t off = write_position(fd);
    ssize_t n = real_writev(fd, iov, cnt);
    after_writev(st, off, iov, cnt, n);
    return n;
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    INIT();
    ssize_t n = real_pwritev(fd, iov, cnt, off);
    after_writev(classify_fd(fd), off, iov, cnt, n);
    return n;
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off) {
    INIT();
    ssize_t n = real_pwritev64(fd, iov, cnt, off);
    after_writev(classify_fd(fd), off, iov, cnt, n);
    return n;
}

ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags) {
    INIT();
    int st = classify_fd(fd);
    off_t at = (off == -1 && st >= 2) ? write_position(fd) : off;
    ssize_t n = real_pwritev2(fd, iov, cnt, off, flags);
    after_writev(st, at, iov, cnt, n);
    return n;
}

static void after_truncate(int st, off_t len, int rc) {
    if (st >= 2 && rc == 0) {
        record(K_TRUNCATE, name_of(st), NULL, (uint64_t)len, NULL, 0);
    }
}

int ftruncate(int fd, off_t len) {
    INIT();
    int rc = real_ftruncate(fd, len);
    after_truncate(classify_fd(fd), len, rc);
    return rc;
}

int ftruncate64(int fd, off_t len) {
    INIT();
    int rc = real_ftruncate64(fd, len);
    after_truncate(classify_fd(fd), len, rc);
    return rc;
}

static int path_state(int dirfd, const char *path) {
    char abs[PATH_MAX];
    if (!active || absolute(dirfd, path, abs) != 0) {
        return UNTRACKED;
    }
    return classify_path(abs);
}

int truncate(const char *path, off_t len) {
    INIT();
    int rc = real_truncate(path, len);
    after_truncate(path_state(AT_FDCWD, path), len, rc);
    return rc;
}

int truncate64(const char *path, off_t len) {
    INIT();
    int rc = real_truncate64(path, len);
    after_truncate(path_state(AT_FDCWD, path), len, rc);
    return rc;
}

int fsync(int fd) {
    INIT();
    int rc = real_fsync(fd);
    int st = classify_fd(fd);
    if (rc == 0 && st != UNTRACKED) {
        after_sync(st);
    }
    return rc;
}

int fdatasync(int fd) {
    INIT();
    int rc = real_fdatasync(fd);
    int st = classify_fd(fd);
    if (rc == 0 && st != UNTRACKED) {
        after_sync(st);
    }
    return rc;
}

static void after_unlink(int st, int rc) {
    if (st >= 2 && rc == 0) {
        record(K_UNLINK, name_of(st), NULL, 0, NULL, 0);
    }
}

int unlink(const char *path) {
    INIT();
    int st = path_state(AT_FDCWD, path);
    int rc = real_unlink(path);
    after_unlink(st, rc);
    return rc;
}

int unlinkat(int dirfd, const char *path, int flags) {
    INIT();
    int st = (flags & AT_REMOVEDIR) ? UNTRACKED : path_state(dirfd, path);
    int rc = real_unlinkat(dirfd, path, flags);
    after_unlink(st, rc);
    return rc;
}

/* A rename into, out of or within the directory. One that crosses its
 * boundary is recorded as UNTRACEABLE. */
static void after_rename(int from, int to, int rc) {
    if (rc != 0 || (from < 2 && to < 2)) {
        return;
    }
    if (from >= 2 && to >= 2) {
        record(K_RENAME, name_of(from), name_of(to), 0, NULL, 0);
    } else {
        record(K_UNTRACEABLE, from >= 2 ? name_of(from) : name_of(to), "rename", 0, NULL, 0);
    }
}

int rename(const char *a, const char *b) {
    INIT();
    int from = path_state(AT_FDCWD, a), to = path_state(AT_FDCWD, b);
    int rc = real_rename(a, b);
    after_rename(from, to, rc);
    return rc;
}

int renameat(int da, const char *a, int db, const char *b) {
    INIT();
    int from = path_state(da, a), to = path_state(db, b);
    int rc = real_renameat(da, a, db, b);
    after_rename(from, to, rc);
    return rc;
}

int renameat2(int da, const char *a, int db, const char *b, unsigned int flags) {
    INIT();
    int from = path_state(da, a), to = path_state(db, b);
    int rc = real_renameat2(da, a, db, b, flags);
    after_rename(from, to, rc);
    return rc;
}

static void check_mapping(int prot, int flags, int fd) {
    if ((prot & PROT_WRITE) && (flags & MAP_SHARED)) {
        int st = classify_fd(fd);
        if (st >= 2) {
            record(K_UNTRACEABLE, name_of(st), "mmap", 0, NULL, 0);
        }
    }
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    INIT();
    check_mapping(prot, flags, fd);
    return real_mmap(addr, len, prot, flags, fd, off);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    INIT();
    check_mapping(prot, flags, fd);
    return real_mmap64(addr, len, prot, flags, fd, off);
}
