/* Native hot path of the sampler: guest kernel reads on the shared RAM file.
 *
 * Mirrors introspect/layers.py (RamFile q35 layout, KernelSpace translation with a
 * per-sample TLB) and the task walk of introspect/features.py (walk_list + the raw
 * fields of every task_struct). Same checks, same errors: introspect's AddressError
 * for a bad address, features.Inconsistent for a list caught mid-update. The Python
 * side (introspect/_accel/__init__.py) hands the exception classes over once.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE 4096ULL
#define FOUR_GIB (1ULL << 32)
#define Q35_LOWMEM_LIMIT 0xB0000000ULL
#define Q35_LOWMEM_SPLIT 0x80000000ULL
#define START_KERNEL_MAP 0xFFFFFFFF80000000ULL
#define KERNEL_IMAGE_END 0xFFFFFFFFC0000000ULL
#define PTE_ADDR 0x000FFFFFFFFFF000ULL
#define TLB_SIZE 4096 /* direct-mapped, by page number */
#define PID_MAX (1 << 22)

static PyObject *AddressError; /* AddressError(layer, address, why) */
static PyObject *Inconsistent; /* Inconsistent(message) */

/* The values of one task record as read last time, raw and as Python objects: a value
 * that did not change (most of them, between two samples) is the same immutable object
 * again instead of a new one. Records themselves are new dicts every time. */
#define N_TASK_VALUES 12
struct task_cache {
    uint64_t raw[N_TASK_VALUES];
    char comm[16];
    PyObject *obj[N_TASK_VALUES];
    PyObject *rec; /* the record made of obj: given again while no value changed */
};

struct compiled; /* read_plans' parsed plans, below */
static void compiled_free(struct compiled *c);

typedef struct {
    PyObject_HEAD
    uint8_t *mem;
    uint64_t size, low, high;
    uint64_t page_table, phys_base, page_offset, direct_end;
    int la57, has_page_offset;
    uint32_t gen; /* TLB entries of older generations are stale */
    uint32_t tlb_gen[TLB_SIZE];
    uint64_t tlb_page[TLB_SIZE], tlb_phys[TLB_SIZE];
    struct task_cache *cache; /* read_tasks: the previous sample's values, by position */
    Py_ssize_t cache_len;
    struct compiled *plans; /* read_plans: the plans of the last call, parsed once */
} Space;

/* -- errors ------------------------------------------------------------------- */
static int address_error(const char *layer, uint64_t address, const char *why) {
    if (AddressError == NULL) {
        PyErr_Format(PyExc_RuntimeError, "%s address %#llx: %s", layer,
                     (unsigned long long)address, why);
        return -1;
    }
    PyObject *exc = PyObject_CallFunction(AddressError, "sKs", layer,
                                          (unsigned long long)address, why);
    if (exc != NULL) {
        PyErr_SetObject(AddressError, exc);
        Py_DECREF(exc);
    }
    return -1;
}

static void inconsistent(const char *message) {
    PyErr_SetString(Inconsistent ? Inconsistent : PyExc_RuntimeError, message);
}

/* -- physical: the RAM file in q35 layout --------------------------------------- */
static int phys_off(Space *s, uint64_t paddr, uint64_t len, uint64_t *off) {
    uint64_t end = paddr + len;
    if (end >= paddr) {
        if (end <= s->low) {
            *off = paddr;
            return 0;
        }
        if (paddr >= FOUR_GIB && end <= FOUR_GIB + s->high) {
            *off = paddr - FOUR_GIB + s->low;
            return 0;
        }
    }
    char why[80];
    snprintf(why, sizeof why, "outside guest RAM (%llu MiB, q35 layout)",
             (unsigned long long)(s->size >> 20));
    return address_error("physical", paddr, why);
}

/* -- kernel virtual: direct map, kernel image, page walk ------------------------ */
static int walk(Space *s, uint64_t vaddr, uint64_t *phys) {
    static const int shifts5[] = {48, 39, 30, 21, 12}, shifts4[] = {39, 30, 21, 12};
    const int *shifts = s->la57 ? shifts5 : shifts4;
    int levels = s->la57 ? 5 : 4;
    uint64_t table = s->page_table;
    char why[80];
    for (int level = 0; level < levels; level++) {
        uint64_t at = table + ((vaddr >> shifts[level]) & 0x1FF) * 8, off = 0, entry;
        if (phys_off(s, at, 8, &off) < 0) {
            PyErr_Clear();
            snprintf(why, sizeof why, "page table at %#llx outside RAM",
                     (unsigned long long)table);
            return address_error("kernel-virtual", vaddr, why);
        }
        memcpy(&entry, s->mem + off, 8);
        if (!(entry & 1)) {
            snprintf(why, sizeof why, "not present (level %d)", levels - level);
            return address_error("kernel-virtual", vaddr, why);
        }
        if ((shifts[level] == 30 || shifts[level] == 21) && (entry & 0x80)) {
            uint64_t mask = (1ULL << shifts[level]) - 1;
            *phys = (entry & PTE_ADDR & ~mask) | (vaddr & mask);
            return 0;
        }
        table = entry & PTE_ADDR;
    }
    *phys = table | (vaddr & (PAGE - 1));
    return 0;
}

static int translate(Space *s, uint64_t vaddr, uint64_t *phys) {
    if (s->has_page_offset && vaddr - s->page_offset < s->direct_end) {
        *phys = vaddr - s->page_offset;
        return 0;
    }
    if (vaddr >= START_KERNEL_MAP && vaddr < KERNEL_IMAGE_END) {
        *phys = vaddr - START_KERNEL_MAP + s->phys_base;
        return 0;
    }
    uint64_t page = vaddr & ~(PAGE - 1), base = 0;
    unsigned slot = (unsigned)((page >> 12) & (TLB_SIZE - 1));
    if (s->tlb_gen[slot] == s->gen && s->tlb_page[slot] == page) {
        base = s->tlb_phys[slot];
    } else {
        if (walk(s, page, &base) < 0)
            return -1;
        s->tlb_gen[slot] = s->gen;
        s->tlb_page[slot] = page;
        s->tlb_phys[slot] = base;
    }
    *phys = base + (vaddr & (PAGE - 1));
    return 0;
}

/* len bytes at kernel virtual vaddr into out, split at page boundaries */
static int vread(Space *s, uint64_t vaddr, void *out, uint64_t len) {
    uint8_t *dst = out;
    /* fast path: all of it in the direct map or the kernel image, and in low RAM (the
     * translation below, page by page, gives the same bytes) */
    uint64_t p = UINT64_MAX;
    if (s->has_page_offset && vaddr - s->page_offset < s->direct_end)
        p = vaddr - s->page_offset;
    else if (vaddr >= START_KERNEL_MAP && vaddr - START_KERNEL_MAP < KERNEL_IMAGE_END
             - START_KERNEL_MAP && len <= KERNEL_IMAGE_END - vaddr)
        p = vaddr - START_KERNEL_MAP + s->phys_base;
    if (p < s->low && len <= s->low - p) {
        memcpy(out, s->mem + p, len);
        return 0;
    }
    while (len > 0) {
        uint64_t n = PAGE - (vaddr & (PAGE - 1)), phys = 0, off = 0;
        if (n > len)
            n = len;
        if (translate(s, vaddr, &phys) < 0 || phys_off(s, phys, n, &off) < 0)
            return -1;
        memcpy(dst, s->mem + off, n);
        dst += n;
        vaddr += n;
        len -= n;
    }
    return 0;
}

#define VREAD_AS(type, name)                                              \
    static int name(Space *s, uint64_t vaddr, type *value) {              \
        return vread(s, vaddr, value, sizeof *value);                      \
    }
VREAD_AS(uint64_t, rd_u64)
VREAD_AS(uint32_t, rd_u32)
VREAD_AS(int32_t, rd_s32)
VREAD_AS(uint16_t, rd_u16)

static int addr_arg(PyObject *arg, uint64_t *out) {
    unsigned long long v = PyLong_AsUnsignedLongLong(arg);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *out = v;
    return 0;
}

/* -- Space: construction ------------------------------------------------------- */
static void Space_unmap(Space *s) {
    if (s->mem != NULL)
        munmap(s->mem, s->size);
    s->mem = NULL;
}

static int Space_init(Space *s, PyObject *args, PyObject *kw) {
    static char *names[] = {"path", "page_table", "phys_base", "la57", "page_offset", NULL};
    const char *path;
    unsigned long long page_table, phys_base;
    int la57 = 0;
    PyObject *page_offset = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "sKK|pO", names, &path, &page_table,
                                     &phys_base, &la57, &page_offset))
        return -1;
    Space_unmap(s);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, path);
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size < (16 << 20)) {
        close(fd);
        PyErr_Format(PyExc_ValueError, "%s: not a guest RAM file", path);
        return -1;
    }
    void *mem = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (mem == MAP_FAILED) {
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, path);
        return -1;
    }
    s->mem = mem;
    s->size = (uint64_t)st.st_size;
    s->low = s->size >= Q35_LOWMEM_LIMIT ? Q35_LOWMEM_SPLIT : s->size;
    s->high = s->size - s->low;
    s->direct_end = s->high ? FOUR_GIB + s->high : s->low;
    s->page_table = page_table;
    s->phys_base = phys_base;
    s->la57 = la57;
    s->has_page_offset = page_offset != Py_None;
    if (s->has_page_offset && addr_arg(page_offset, &s->page_offset) < 0)
        return -1;
    s->gen = 1;
    memset(s->tlb_gen, 0, sizeof s->tlb_gen);
    return 0;
}

static void cache_clear(Space *s) {
    for (Py_ssize_t i = 0; i < s->cache_len; i++)
    {
        for (int k = 0; k < N_TASK_VALUES; k++)
            Py_CLEAR(s->cache[i].obj[k]);
        Py_CLEAR(s->cache[i].rec);
    }
    PyMem_Free(s->cache);
    s->cache = NULL;
    s->cache_len = 0;
}

static void Space_dealloc(Space *s) {
    cache_clear(s);
    compiled_free(s->plans);
    s->plans = NULL;
    Space_unmap(s);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static int ready(Space *s) {
    if (s->mem != NULL)
        return 0;
    PyErr_SetString(PyExc_ValueError, "Space is closed");
    return -1;
}

/* -- Space: methods ------------------------------------------------------------- */
static PyObject *Space_flush(Space *s, PyObject *unused) {
    (void)unused;
    if (++s->gen == 0) { /* wrapped: forget everything for real */
        memset(s->tlb_gen, 0, sizeof s->tlb_gen);
        s->gen = 1;
    }
    Py_RETURN_NONE;
}

static PyObject *Space_close(Space *s, PyObject *unused) {
    (void)unused;
    cache_clear(s);
    Space_unmap(s);
    Py_RETURN_NONE;
}

static PyObject *Space_translate(Space *s, PyObject *arg) {
    uint64_t vaddr, phys;
    if (ready(s) < 0 || addr_arg(arg, &vaddr) < 0 || translate(s, vaddr, &phys) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(phys);
}

static PyObject *Space_read(Space *s, PyObject *const *args, Py_ssize_t nargs) {
    uint64_t vaddr;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "read(vaddr, length)");
        return NULL;
    }
    Py_ssize_t len = PyLong_AsSsize_t(args[1]);
    if ((len == -1 && PyErr_Occurred()) || ready(s) < 0 || addr_arg(args[0], &vaddr) < 0)
        return NULL;
    if (len < 0 || len > (1 << 24)) {
        PyErr_Format(PyExc_ValueError, "read length %zd out of range", len);
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, len);
    if (out != NULL && vread(s, vaddr, PyBytes_AS_STRING(out), (uint64_t)len) < 0)
        Py_CLEAR(out);
    return out;
}

#define SCALAR_METHOD(name, type, reader, convert)                         \
    static PyObject *name(Space *s, PyObject *arg) {                       \
        uint64_t vaddr;                                                    \
        type value;                                                        \
        if (ready(s) < 0 || addr_arg(arg, &vaddr) < 0 || reader(s, vaddr, &value) < 0) \
            return NULL;                                                   \
        return convert(value);                                             \
    }
SCALAR_METHOD(Space_u64, uint64_t, rd_u64, PyLong_FromUnsignedLongLong)
SCALAR_METHOD(Space_u32, uint32_t, rd_u32, PyLong_FromUnsignedLong)
SCALAR_METHOD(Space_s32, int32_t, rd_s32, PyLong_FromLong)
SCALAR_METHOD(Space_u16, uint16_t, rd_u16, PyLong_FromUnsignedLong)

#define U64S_MAX 4096

static PyObject *Space_u64s(Space *s, PyObject *const *args, Py_ssize_t nargs) {
    uint64_t vaddr;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "u64s(vaddr, count)");
        return NULL;
    }
    Py_ssize_t count = PyLong_AsSsize_t(args[1]);
    if ((count == -1 && PyErr_Occurred()) || ready(s) < 0 || addr_arg(args[0], &vaddr) < 0)
        return NULL;
    if (count < 0 || count > U64S_MAX) {
        PyErr_Format(PyExc_ValueError, "u64s count %zd out of range (0-%d)", count, U64S_MAX);
        return NULL;
    }
    uint64_t *values = PyMem_Malloc((size_t)(count ? count : 1) * 8);
    if (values == NULL)
        return PyErr_NoMemory();
    PyObject *out = NULL;
    if (vread(s, vaddr, values, (uint64_t)count * 8) == 0)
        out = PyTuple_New(count);
    for (Py_ssize_t i = 0; out != NULL && i < count; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(values[i]);
        if (v == NULL)
            Py_CLEAR(out);
        else
            PyTuple_SET_ITEM(out, i, v);
    }
    PyMem_Free(values);
    return out;
}

/* one step of a list walk: the node after `node`, with next->prev checked */
static int list_next(Space *s, uint64_t head, uint64_t node, uint64_t *next) {
    uint64_t prev;
    if (rd_u64(s, node, next) < 0)
        return -1;
    if (*next == head)
        return 0;
    if (rd_u64(s, *next + 8, &prev) < 0)
        return -1;
    if (prev != node) {
        char message[96];
        snprintf(message, sizeof message, "list at %#llx changed during the walk (node %#llx)",
                 (unsigned long long)head, (unsigned long long)*next);
        inconsistent(message);
        return -1;
    }
    return 0;
}

static void too_long(uint64_t head, Py_ssize_t limit) {
    char message[96];
    snprintf(message, sizeof message, "list at %#llx longer than %zd: a loop or a torn read",
             (unsigned long long)head, limit);
    inconsistent(message);
}

/* Offsets of tasks(): task_struct members, then mm_struct.rss_stat. */
enum { O_TASKS, O_PID, O_TGID, O_STATE, O_EXIT, O_FLAGS, O_PARENT, O_MM, O_UTIME, O_STIME,
       O_MINFLT, O_MAJFLT, O_COMM, O_RSS, N_OFFSETS };

/* tasks(head, offsets, limit): raw fields of every task on the list at head, as
 * (address, pid, tgid, ppid, comm bytes[16], state, exit_state, flags, utime, stime,
 *  min_flt, maj_flt, rss_file, rss_anon, rss_shmem), like features.python_task_rows. */
/* The fields of one task_struct that tasks() and read_tasks() take, read at task t. */
struct task_raw {
    uint64_t t, parent, mm, times[2], faults[2], rss[4];
    int32_t pid, tgid, ppid, exit_state;
    uint32_t state, flags;
    char comm[16];
};

/* Read the task at ``t`` (o: the task_offsets); -1 with an exception set (a pid out of
   range is a torn walk: Inconsistent). */
static int task_read(Space *s, const uint64_t *o, uint64_t t, struct task_raw *r) {
    memset(r, 0, sizeof *r);
    r->t = t;
    if (rd_s32(s, t + o[O_PID], &r->pid) < 0)
        return -1;
    if (!(0 < r->pid && r->pid < PID_MAX)) {
        char message[64];
        snprintf(message, sizeof message, "task at %#llx has pid %d", (unsigned long long)t,
                 r->pid);
        inconsistent(message);
        return -1;
    }
    if (rd_s32(s, t + o[O_TGID], &r->tgid) < 0 || rd_u32(s, t + o[O_STATE], &r->state) < 0
        || rd_s32(s, t + o[O_EXIT], &r->exit_state) < 0
        || rd_u32(s, t + o[O_FLAGS], &r->flags) < 0
        || rd_u64(s, t + o[O_PARENT], &r->parent) < 0 || rd_u64(s, t + o[O_MM], &r->mm) < 0
        || vread(s, t + o[O_COMM], r->comm, 16) < 0
        || rd_u64(s, t + o[O_UTIME], &r->times[0]) < 0
        || rd_u64(s, t + o[O_STIME], &r->times[1]) < 0
        || rd_u64(s, t + o[O_MINFLT], &r->faults[0]) < 0
        || rd_u64(s, t + o[O_MAJFLT], &r->faults[1]) < 0)
        return -1;
    if (r->parent && rd_s32(s, r->parent + o[O_TGID], &r->ppid) < 0)
        return -1;
    if (r->mm && vread(s, r->mm + o[O_RSS], r->rss, sizeof r->rss) < 0)
        return -1;
    return 0;
}

static PyObject *Space_tasks(Space *s, PyObject *args) {
    unsigned long long head;
    PyObject *offsets_arg;
    Py_ssize_t limit;
    uint64_t o[N_OFFSETS];
    if (!PyArg_ParseTuple(args, "KOn", &head, &offsets_arg, &limit) || ready(s) < 0)
        return NULL;
    PyObject *offsets = PySequence_Fast(offsets_arg, "offsets must be a sequence");
    if (offsets == NULL)
        return NULL;
    if (PySequence_Fast_GET_SIZE(offsets) != N_OFFSETS) {
        Py_DECREF(offsets);
        PyErr_Format(PyExc_ValueError, "tasks() takes %d offsets", N_OFFSETS);
        return NULL;
    }
    for (int i = 0; i < N_OFFSETS; i++) {
        if (addr_arg(PySequence_Fast_GET_ITEM(offsets, i), &o[i]) < 0) {
            Py_DECREF(offsets);
            return NULL;
        }
    }
    Py_DECREF(offsets);

    PyObject *rows = PyList_New(0);
    uint64_t node = head;
    for (Py_ssize_t i = 0; rows != NULL && i < limit; i++) {
        uint64_t next;
        struct task_raw tk;
        if (list_next(s, head, node, &next) < 0)
            goto fail;
        if (next == head)
            return rows;
        if (task_read(s, o, next - o[O_TASKS], &tk) < 0)
            goto fail;
        PyObject *row = Py_BuildValue("(Kiiiy#IiIKKKKKKK)", (unsigned long long)tk.t, tk.pid,
                                      tk.tgid, tk.ppid, tk.comm, (Py_ssize_t)16, tk.state,
                                      tk.exit_state, tk.flags,
                                      (unsigned long long)tk.times[0],
                                      (unsigned long long)tk.times[1],
                                      (unsigned long long)tk.faults[0],
                                      (unsigned long long)tk.faults[1],
                                      (unsigned long long)tk.rss[0], (unsigned long long)tk.rss[1],
                                      (unsigned long long)tk.rss[3]);
        if (row == NULL || PyList_Append(rows, row) < 0) {
            Py_XDECREF(row);
            goto fail;
        }
        Py_DECREF(row);
        node = next;
    }
    if (rows != NULL)
        too_long(head, limit);
fail:
    Py_XDECREF(rows);
    return NULL;
}

/* -- the whole task group in C: records and features, as features.read_tasks ---- */
#define TASK_IDLE 0x402
#define PF_KTHREAD 0x00200000U
#define RSS_VALID (1ULL << 62)
#define TOP_MAX 16
#define PCPU_MAX 8192

static PyObject *int128_to_py(__int128 v) {
    if (v >= INT64_MIN && v <= INT64_MAX)
        return PyLong_FromLongLong((long long)v);
    if (v >= 0 && (unsigned __int128)v <= UINT64_MAX)
        return PyLong_FromUnsignedLongLong((unsigned long long)v);
    unsigned char bytes[16];
    memcpy(bytes, &v, 16); /* little-endian x86-64 */
    return _PyLong_FromByteArray(bytes, 16, 1, 1);
}

/* d[key] = value, stealing the value */
static int set_item(PyObject *d, const char *key, PyObject *value) {
    if (value == NULL)
        return -1;
    int rc = PyDict_SetItemString(d, key, value);
    Py_DECREF(value);
    return rc;
}

/* the keys of a task record, in features.read_tasks' order (interned once) */
#define N_TASK_KEYS N_TASK_VALUES
static PyObject *task_keys[N_TASK_KEYS];
static PyObject *task_template; /* {key: None for each key}, in order */
static const char *task_key_names[N_TASK_KEYS] = {
    "address", "pid", "tgid", "ppid", "comm", "state", "kthread", "utime", "stime",
    "min_flt", "maj_flt", "rss_pages"};

/* read_tasks(head, offsets, limit, top) -> (features, tasks): features.read_tasks in one
 * call: the same per-task dicts (same keys, same order) and the same features, float sums
 * added in list order as Python 3.11's sum() does, the busiest by a stable sort. */
static PyObject *Space_read_tasks(Space *s, PyObject *args) {
    static const char letters[] = "RSDTtXZP";
    static const char *state_names[] = {"tasks_running", "tasks_sleeping", "tasks_blocked",
                                        "tasks_idle", "tasks_stopped", "tasks_zombie"};
    unsigned long long head;
    PyObject *offsets_arg;
    Py_ssize_t limit;
    int top;
    uint64_t o[N_OFFSETS];
    if (!PyArg_ParseTuple(args, "KOni", &head, &offsets_arg, &limit, &top) || ready(s) < 0)
        return NULL;
    if (top < 0 || top > TOP_MAX) {
        PyErr_Format(PyExc_ValueError, "top %d out of range (0-%d)", top, TOP_MAX);
        return NULL;
    }
    PyObject *offsets = PySequence_Fast(offsets_arg, "offsets must be a sequence");
    if (offsets == NULL)
        return NULL;
    if (PySequence_Fast_GET_SIZE(offsets) != N_OFFSETS) {
        Py_DECREF(offsets);
        PyErr_Format(PyExc_ValueError, "read_tasks() takes %d offsets", N_OFFSETS);
        return NULL;
    }
    for (int i = 0; i < N_OFFSETS; i++) {
        if (addr_arg(PySequence_Fast_GET_ITEM(offsets, i), &o[i]) < 0) {
            Py_DECREF(offsets);
            return NULL;
        }
    }
    Py_DECREF(offsets);

    PyObject *tasks = PyList_New(0), *features = NULL;
    Py_ssize_t counts[6] = {0, 0, 0, 0, 0, 0}, kthreads = 0, n = 0;
    double sum_ut = 0.0, sum_st = 0.0, best[TOP_MAX];
    unsigned __int128 sum_min = 0, sum_maj = 0, sum_rss = 0;
    int nbest = 0, done = 0;
    uint64_t node = head;
    for (Py_ssize_t i = 0; tasks != NULL && i < limit; i++) {
        uint64_t next;
        struct task_raw tk;
        if (list_next(s, head, node, &next) < 0)
            goto fail;
        if (next == head) {
            done = 1;
            break;
        }
        if (task_read(s, o, next - o[O_TASKS], &tk) < 0)
            goto fail;
        /* task_state(): 'I' for TASK_IDLE, else by the highest bit of (tk.state|exit) & 0x7f */
        char letter;
        if (tk.state == TASK_IDLE) {
            letter = 'I';
        } else {
            uint32_t report = (tk.state | (uint32_t)tk.exit_state) & 0x7F;
            int bits = 0;
            while (report) {
                bits++;
                report >>= 1;
            }
            letter = letters[bits];
        }
        switch (letter) {
        case 'R': counts[0]++; break;
        case 'S': counts[1]++; break;
        case 'D': counts[2]++; break;
        case 'I': counts[3]++; break;
        case 'T': case 't': counts[4]++; break;
        case 'Z': counts[5]++; break;
        default: break;
        }
        int kthread = (tk.flags & PF_KTHREAD) != 0;
        kthreads += kthread;
        unsigned __int128 rss_pages = 0;
        uint64_t rss_used[3] = {tk.rss[0], tk.rss[1], tk.rss[3]};
        for (int r = 0; r < 3; r++)
            if (rss_used[r] < RSS_VALID)
                rss_pages += rss_used[r];
        double ut = (double)tk.times[0] / 1e9, st = (double)tk.times[1] / 1e9, cpu = ut + st;
        sum_ut += ut;
        sum_st += st;
        sum_min += tk.faults[0];
        sum_maj += tk.faults[1];
        sum_rss += rss_pages;
        /* sorted(..., reverse=True) is stable: an equal key goes after the earlier ones */
        int at = nbest;
        while (at > 0 && best[at - 1] < cpu)
            at--;
        if (at < top) {
            int last = nbest < top ? nbest : top - 1;
            for (int j = last; j > at; j--)
                best[j] = best[j - 1];
            best[at] = cpu;
            if (nbest < top)
                nbest++;
        }
        if (n >= s->cache_len) { /* one more slot, empty */
            Py_ssize_t want = s->cache_len ? 2 * s->cache_len : 64;
            struct task_cache *grown = PyMem_Realloc(s->cache, (size_t)want * sizeof *grown);
            if (grown == NULL) {
                PyErr_NoMemory();
                goto fail;
            }
            memset(grown + s->cache_len, 0, (size_t)(want - s->cache_len) * sizeof *grown);
            s->cache = grown;
            s->cache_len = want;
        }
        struct task_cache *c = &s->cache[n];
        uint64_t raw[N_TASK_VALUES] = {
            tk.t, (uint64_t)(uint32_t)tk.pid, (uint64_t)(uint32_t)tk.tgid,
            (uint64_t)(uint32_t)tk.ppid, 0, (uint64_t)(unsigned char)letter, (uint64_t)kthread,
            tk.times[0], tk.times[1], tk.faults[0], tk.faults[1], (uint64_t)rss_pages};
        int bad = 0;
        for (int k = 0; k < N_TASK_VALUES && !bad; k++) {
            int same = c->obj[k] != NULL && (k == 4 ? memcmp(c->comm, tk.comm, 16) == 0
                                                    : c->raw[k] == raw[k]);
            if (!same) {
                PyObject *v = NULL;
                char letter_s[2] = {letter, 0};
                switch (k) {
                case 0: v = PyLong_FromUnsignedLongLong(tk.t); break;
                case 1: v = PyLong_FromLong(tk.pid); break;
                case 2: v = PyLong_FromLong(tk.tgid); break;
                case 3: v = PyLong_FromLong(tk.ppid); break;
                case 4: v = PyUnicode_DecodeUTF8(tk.comm, (Py_ssize_t)strnlen(tk.comm, 16),
                                                 "replace"); break;
                case 5: v = PyUnicode_FromString(letter_s); break;
                case 6: v = PyBool_FromLong(kthread); break;
                case 7: v = PyFloat_FromDouble(ut); break;
                case 8: v = PyFloat_FromDouble(st); break;
                case 9: v = PyLong_FromUnsignedLongLong(tk.faults[0]); break;
                case 10: v = PyLong_FromUnsignedLongLong(tk.faults[1]); break;
                default: v = int128_to_py((__int128)rss_pages); break;
                }
                if (v == NULL) {
                    bad = 1;
                    break;
                }
                Py_XSETREF(c->obj[k], v);
                c->raw[k] = raw[k];
                if (k == 4)
                    memcpy(c->comm, tk.comm, 16);
                Py_CLEAR(c->rec); /* made of an old value: made again below */
            }
        }
        if (!bad && c->rec == NULL) {
            /* a copy of a record with the same keys: its table is cloned, not built */
            PyObject *rec = PyDict_Copy(task_template);
            bad = rec == NULL;
            for (int k = 0; k < N_TASK_VALUES && !bad; k++)
                bad = PyDict_SetItem(rec, task_keys[k], c->obj[k]) < 0;
            if (bad)
                Py_XDECREF(rec);
            else
                Py_XSETREF(c->rec, rec);
        }
        /* unchanged since the last sample: the same record (records are read-only) */
        if (bad || PyList_Append(tasks, c->rec) < 0)
            goto fail;
        n++;
        node = next;
    }
    if (tasks == NULL)
        return NULL;
    if (!done) {
        too_long(head, limit);
        goto fail;
    }
    features = PyDict_New();
    if (features == NULL)
        goto fail;
    /* sum() of no floats is the int 0 */
    if (set_item(features, "tasks", PyLong_FromSsize_t(n)) < 0)
        goto fail;
    for (int i = 0; i < 6; i++)
        if (set_item(features, state_names[i], PyLong_FromSsize_t(counts[i])) < 0)
            goto fail;
    if (set_item(features, "tasks_kthreads", PyLong_FromSsize_t(kthreads)) < 0
        || set_item(features, "tasks_utime_s",
                    n ? PyFloat_FromDouble(sum_ut) : PyLong_FromLong(0)) < 0
        || set_item(features, "tasks_stime_s",
                    n ? PyFloat_FromDouble(sum_st) : PyLong_FromLong(0)) < 0
        || set_item(features, "tasks_minflt", int128_to_py((__int128)sum_min)) < 0
        || set_item(features, "tasks_majflt", int128_to_py((__int128)sum_maj)) < 0
        || set_item(features, "tasks_rss_pages", int128_to_py((__int128)sum_rss)) < 0)
        goto fail;
    for (int i = 0; i < nbest; i++) {
        char key[24];
        snprintf(key, sizeof key, "top%d_cpu_s", i + 1);
        if (set_item(features, key, PyFloat_FromDouble(best[i])) < 0)
            goto fail;
    }
    PyObject *out = PyTuple_Pack(2, features, tasks);
    Py_DECREF(features);
    Py_DECREF(tasks);
    return out;
fail:
    Py_XDECREF(features);
    Py_XDECREF(tasks);
    return NULL;
}

/* -- feature plans: groups of sums of reads at fixed addresses ---------------------- */
/* A plan is a sequence of items (name, type, base, addresses, mode, number):
 *   type: 'Q' u64, 'q' s64, 'I' u32, 'i' s32, 'H' u16 (each address read as that type)
 *   base: 0, or the address of a u64 pointer read first and added to every address
 *   mode 0: int, sum * number;  mode 1: float, sum / number (int -> double first, as
 *   Python's int / float);  mode 2: float, ((sum + bias) mod 2**64) / number, bias in
 *   item 7 (the uptime: ((jiffies - INITIAL_JIFFIES) & (2**64 - 1)) / hz). */
static int plan_value(Space *s, PyObject *item, __int128 *sum) {
    const char *type;
    unsigned long long base;
    PyObject *addrs;
    Py_ssize_t count;
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 6) {
        PyErr_SetString(PyExc_ValueError, "plan item: (name, type, base, addrs, mode, num)");
        return -1;
    }
    type = PyUnicode_AsUTF8(PyTuple_GET_ITEM(item, 1));
    if (type == NULL || addr_arg(PyTuple_GET_ITEM(item, 2), (uint64_t *)&base) < 0)
        return -1;
    addrs = PyTuple_GET_ITEM(item, 3);
    if (!PyTuple_Check(addrs)) {
        PyErr_SetString(PyExc_ValueError, "plan item addresses must be a tuple");
        return -1;
    }
    uint64_t add = 0;
    if (base && rd_u64(s, base, &add) < 0)
        return -1;
    count = PyTuple_GET_SIZE(addrs);
    *sum = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        uint64_t a;
        if (addr_arg(PyTuple_GET_ITEM(addrs, i), &a) < 0)
            return -1;
        a += add;
        switch (type[0]) {
        case 'Q': { uint64_t v; if (rd_u64(s, a, &v) < 0) return -1; *sum += v; break; }
        case 'q': { int64_t v; if (vread(s, a, &v, 8) < 0) return -1; *sum += v; break; }
        case 'I': { uint32_t v; if (rd_u32(s, a, &v) < 0) return -1; *sum += v; break; }
        case 'i': { int32_t v; if (rd_s32(s, a, &v) < 0) return -1; *sum += v; break; }
        case 'H': { uint16_t v; if (rd_u16(s, a, &v) < 0) return -1; *sum += v; break; }
        default:
            PyErr_Format(PyExc_ValueError, "plan item type %s unknown", type);
            return -1;
        }
    }
    return 0;
}

/* the numbers of a plan item from index `from` on, as uint64 (offsets, addresses) */
static int item_u64s(PyObject *item, Py_ssize_t from, uint64_t *out, Py_ssize_t n) {
    if (PyTuple_GET_SIZE(item) < from + n) {
        PyErr_Format(PyExc_ValueError, "plan item needs %zd numbers", n);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (addr_arg(PyTuple_GET_ITEM(item, from + i), &out[i]) < 0)
            return -1;
    return 0;
}

/* a C string of at most `limit` bytes at vaddr, as kernel.cstring (UTF-8, replace) */
static PyObject *cstring(Space *s, uint64_t vaddr, size_t limit) {
    char buf[64];
    if (limit > sizeof buf)
        limit = sizeof buf;
    if (vread(s, vaddr, buf, limit) < 0)
        return NULL;
    return PyUnicode_DecodeUTF8(buf, (Py_ssize_t)strnlen(buf, limit), "replace");
}

static int set_named(PyObject *out, PyObject *name, const char *suffix, PyObject *value) {
    if (value == NULL)
        return -1;
    PyObject *key = PyUnicode_FromFormat("%U_%s", name, suffix);
    int rc = key == NULL ? -1 : PyDict_SetItem(out, key, value);
    Py_XDECREF(key);
    Py_DECREF(value);
    return rc;
}

/* the list nodes after head, into a PyMem array (bounded, next->prev checked) */
static Py_ssize_t list_nodes(Space *s, uint64_t head, Py_ssize_t limit, uint64_t **nodes) {
    uint64_t *out = PyMem_Malloc((size_t)limit * 8), node = head, next;
    if (out == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < limit; i++) {
        if (list_next(s, head, node, &next) < 0)
            break;
        if (next == head) {
            *nodes = out;
            return i;
        }
        out[i] = node = next;
    }
    if (!PyErr_Occurred())
        too_long(head, limit);
    PyMem_Free(out);
    return -1;
}

/* features.read_block: item ("", "B", &block_class.p, o_list (from *p to the klist's
 * list head), o_node, o_knode, o_dev, o_name, o_bd, o_partno, o_stats, o_sec, o_ios,
 * o_ticks, hz, per-CPU offsets...) */
static int block_into(Space *s, PyObject *item, PyObject *out) {
    enum { P_AT, LIST, NODE, KNODE, DEV, NAME, BD, PARTNO, STATS, SEC, IOS, TICKS, HZ, N };
    uint64_t o[N], cpus[PCPU_MAX], *nodes = NULL, p;
    Py_ssize_t ncpu = PyTuple_GET_SIZE(item) - 2 - N;
    if (ncpu < 0 || ncpu > PCPU_MAX || item_u64s(item, 2, o, N) < 0
        || item_u64s(item, 2 + N, cpus, ncpu) < 0)
        return PyErr_Occurred() ? -1 : (PyErr_SetString(PyExc_ValueError, "block item"), -1);
    if (o[HZ] == 0) {
        PyErr_SetString(PyExc_ZeroDivisionError, "hz is 0");
        return -1;
    }
    if (rd_u64(s, o[P_AT], &p) < 0)
        return -1;
    Py_ssize_t count = list_nodes(s, p + o[LIST], 1024, &nodes);
    if (count < 0)
        return -1;
    int rc = -1;
    for (Py_ssize_t i = 0; i < count; i++) {
        uint64_t dev, name_at, stats;
        uint8_t partno;
        if (rd_u64(s, nodes[i] - o[NODE] - o[KNODE] + o[DEV], &dev) < 0
            || vread(s, dev - o[BD] + o[PARTNO], &partno, 1) < 0)
            goto done;
        if (partno != 0)
            continue;
        if (rd_u64(s, dev + o[NAME], &name_at) < 0)
            goto done;
        PyObject *name = cstring(s, name_at, 32);
        if (name == NULL)
            goto done;
        const char *u = PyUnicode_AsUTF8(name);
        if (u == NULL || (strncmp(u, "loop", 4) != 0 && strncmp(u, "ram", 3) != 0)) {
            unsigned __int128 rd = 0, rs = 0, wr = 0, ws = 0, ticks = 0;
            int bad = u == NULL || rd_u64(s, dev - o[BD] + o[STATS], &stats) < 0;
            for (Py_ssize_t cpu = 0; !bad && cpu < ncpu; cpu++) {
                uint64_t at = stats + cpus[cpu], sec[4], ios[4], tk;
                if (vread(s, at + o[SEC], sec, 32) < 0 || vread(s, at + o[IOS], ios, 32) < 0
                    || rd_u64(s, at + o[TICKS], &tk) < 0) {
                    bad = 1;
                    break;
                }
                rd += ios[0], rs += sec[0], wr += ios[1], ws += sec[1], ticks += tk;
            }
            if (bad || set_named(out, name, "rd", int128_to_py((__int128)rd)) < 0
                || set_named(out, name, "rsec", int128_to_py((__int128)rs)) < 0
                || set_named(out, name, "wr", int128_to_py((__int128)wr)) < 0
                || set_named(out, name, "wsec", int128_to_py((__int128)ws)) < 0
                || set_named(out, name, "ioms",
                             int128_to_py((__int128)(ticks * 1000 / o[HZ]))) < 0) {
                Py_DECREF(name);
                goto done;
            }
        }
        Py_DECREF(name);
    }
    rc = 0;
done:
    PyMem_Free(nodes);
    return rc;
}

/* features.read_net: item ("", "N", head, o_list, o_name, o_stats, o_core, o_rxe, o_txe,
 * o_rxd, o_txd, virtio, priv, o_pairs, o_rq, o_sq, rq_size, sq_size, o_rq_packets,
 * o_sq_packets, per-CPU offsets...); virtio 0: no virtio-net type, devices only counted */
static int net_into(Space *s, PyObject *item, PyObject *out) {
    enum { HEAD, LIST, NAME, STATS, CORE, RXE, TXE, RXD, TXD, VIRTIO, PRIV, PAIRS, RQ, SQ,
           RQ_SIZE, SQ_SIZE, RQ_PKT, SQ_PKT, N };
    uint64_t o[N], cpus[PCPU_MAX], *nodes = NULL;
    Py_ssize_t ncpu = PyTuple_GET_SIZE(item) - 2 - N;
    if (ncpu < 0 || ncpu > PCPU_MAX || item_u64s(item, 2, o, N) < 0
        || item_u64s(item, 2 + N, cpus, ncpu) < 0)
        return PyErr_Occurred() ? -1 : (PyErr_SetString(PyExc_ValueError, "net item"), -1);
    PyObject *zero = PyLong_FromLong(0);
    if (zero == NULL || PyDict_SetItemString(out, "net_devices", zero) < 0) {
        Py_XDECREF(zero);
        return -1;
    }
    Py_DECREF(zero);
    Py_ssize_t count = list_nodes(s, o[HEAD], 1024, &nodes);
    if (count < 0)
        return -1;
    int rc = -1;
    for (Py_ssize_t i = 0; i < count; i++) {
        uint64_t dev = nodes[i] - o[LIST];
        PyObject *name = cstring(s, dev + o[NAME], 16);
        if (name == NULL)
            goto done;
        const char *u = PyUnicode_AsUTF8(name);
        if (u == NULL) {
            Py_DECREF(name);
            goto done;
        }
        if (strcmp(u, "lo") == 0 || !(o[VIRTIO] && strncmp(u, "eth", 3) == 0)) {
            Py_DECREF(name);
            continue;
        }
        uint64_t priv = dev + o[PRIV], rq, sq, rx[3] = {0, 0, 0}, tx[2] = {0, 0}, v[3];
        uint64_t rxd, txd, core, rxe, txe;
        uint16_t pairs;
        unsigned __int128 rxp = 0, rxb = 0, rxdrop = 0, txp = 0, txb = 0, txdrop;
        int bad = rd_u16(s, priv + o[PAIRS], &pairs) < 0;
        if (!bad && !(0 < pairs && pairs <= 256)) {
            char message[96];
            snprintf(message, sizeof message, "virtio-net device at %#llx reports %u queue "
                     "pairs", (unsigned long long)dev, pairs);
            inconsistent(message);
            bad = 1;
        }
        bad = bad || rd_u64(s, priv + o[RQ], &rq) < 0 || rd_u64(s, priv + o[SQ], &sq) < 0;
        for (unsigned q = 0; !bad && q < pairs; q++) {
            if (vread(s, rq + q * o[RQ_SIZE] + o[RQ_PKT], rx, 24) < 0
                || vread(s, sq + q * o[SQ_SIZE] + o[SQ_PKT], tx, 16) < 0) {
                bad = 1;
                break;
            }
            rxp += rx[0], rxb += rx[1], rxdrop += rx[2], txp += tx[0], txb += tx[1];
        }
        bad = bad || rd_u64(s, dev + o[STATS] + o[RXD], &rxd) < 0
            || rd_u64(s, dev + o[STATS] + o[TXD], &txd) < 0 || rd_u64(s, dev + o[CORE], &core) < 0;
        rxdrop += rxd;
        txdrop = txd;
        for (Py_ssize_t cpu = 0; !bad && core && cpu < ncpu; cpu++) {
            if (vread(s, core + cpus[cpu], v, 16) < 0) {
                bad = 1;
                break;
            }
            rxdrop += v[0], txdrop += v[1];
        }
        bad = bad || rd_u64(s, dev + o[STATS] + o[RXE], &rxe) < 0
            || rd_u64(s, dev + o[STATS] + o[TXE], &txe) < 0;
        if (bad || set_named(out, name, "rxp", int128_to_py((__int128)rxp)) < 0
            || set_named(out, name, "txp", int128_to_py((__int128)txp)) < 0
            || set_named(out, name, "rxb", int128_to_py((__int128)rxb)) < 0
            || set_named(out, name, "txb", int128_to_py((__int128)txb)) < 0
            || set_named(out, name, "rxdrop", int128_to_py((__int128)rxdrop)) < 0
            || set_named(out, name, "txdrop", int128_to_py((__int128)txdrop)) < 0
            || set_named(out, name, "rxerr", PyLong_FromUnsignedLongLong(rxe)) < 0
            || set_named(out, name, "txerr", PyLong_FromUnsignedLongLong(txe)) < 0) {
            Py_DECREF(name);
            goto done;
        }
        Py_DECREF(name);
    }
    PyObject *n = PyLong_FromSsize_t(count);
    if (n == NULL || PyDict_SetItemString(out, "net_devices", n) < 0) {
        Py_XDECREF(n);
        goto done;
    }
    Py_DECREF(n);
    rc = 0;
done:
    PyMem_Free(nodes);
    return rc;
}

static int plan_into(Space *s, PyObject *plan, PyObject *out) {
    PyObject *items = PySequence_Fast(plan, "a plan is a sequence of items");
    if (items == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(items, i), *value = NULL;
        __int128 sum;
        const char *type = PyTuple_Check(item) && PyTuple_GET_SIZE(item) > 2 ?
            PyUnicode_AsUTF8(PyTuple_GET_ITEM(item, 1)) : "";
        if (type == NULL)
            goto fail;
        if (type[0] == 'B' || type[0] == 'N') { /* a whole list-walking group */
            if ((type[0] == 'B' ? block_into(s, item, out) : net_into(s, item, out)) < 0)
                goto fail;
            continue;
        }
        if (plan_value(s, item, &sum) < 0)
            goto fail;
        long mode = PyLong_AsLong(PyTuple_GET_ITEM(item, 4));
        PyObject *num = PyTuple_GET_ITEM(item, 5);
        if (mode == -1 && PyErr_Occurred())
            goto fail;
        if (mode == 0) {
            long long mul = PyLong_AsLongLong(num);
            if (mul == -1 && PyErr_Occurred())
                goto fail;
            value = int128_to_py(sum * mul);
        } else if (mode == 1 || mode == 2) {
            double div = PyFloat_AsDouble(num);
            if (div == -1.0 && PyErr_Occurred())
                goto fail;
            if (mode == 2) {
                long long bias = PyTuple_GET_SIZE(item) > 6 ?
                    PyLong_AsLongLong(PyTuple_GET_ITEM(item, 6)) : 0;
                if (bias == -1 && PyErr_Occurred())
                    goto fail;
                value = PyFloat_FromDouble((double)(uint64_t)(sum + bias) / div);
            } else {
                value = PyFloat_FromDouble((double)sum / div);
            }
        } else {
            PyErr_Format(PyExc_ValueError, "plan item mode %ld unknown", mode);
            goto fail;
        }
        if (value == NULL || PyDict_SetItem(out, PyTuple_GET_ITEM(item, 0), value) < 0) {
            Py_XDECREF(value);
            goto fail;
        }
        Py_DECREF(value);
    }
    Py_DECREF(items);
    return 0;
fail:
    Py_DECREF(items);
    return -1;
}

/* read_plan(plan) -> features of one group (raises as the group's reader would) */
static PyObject *Space_read_plan(Space *s, PyObject *plan) {
    if (ready(s) < 0)
        return NULL;
    PyObject *out = PyDict_New();
    if (out != NULL && plan_into(s, plan, out) < 0)
        Py_CLEAR(out);
    return out;
}

/* Plans parsed once: read_plans is called with the same plans object every sample, so
 * its numbers are converted from Python once (while that object lives, held here). */
struct citem {
    PyObject *key, *item; /* borrowed from plans; item: the B/N items, read as before */
    char type;
    int mode;
    uint64_t base, *addrs;
    Py_ssize_t naddr;
    long long mul, bias;
    double div;
};
struct cgroup {
    PyObject *name; /* borrowed */
    Py_ssize_t first, count;
};
struct compiled {
    PyObject *plans; /* strong: keeps every borrowed object alive */
    struct citem *items;
    struct cgroup *groups;
    uint64_t *pool;
    Py_ssize_t nitems, ngroups;
};

static void compiled_free(struct compiled *c) {
    if (c == NULL)
        return;
    Py_XDECREF(c->plans);
    PyMem_Free(c->items);
    PyMem_Free(c->groups);
    PyMem_Free(c->pool);
    PyMem_Free(c);
}

static struct compiled *compile_plans(PyObject *plans) {
    struct compiled *c = PyMem_Calloc(1, sizeof *c);
    if (c == NULL)
        return (struct compiled *)PyErr_NoMemory();
    c->plans = Py_NewRef(plans);
    Py_ssize_t ngroups = PyTuple_GET_SIZE(plans), nitems = 0, naddrs = 0;
    for (Py_ssize_t g = 0; g < ngroups; g++) {
        PyObject *entry = PyTuple_GET_ITEM(plans, g);
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2
            || !PyTuple_Check(PyTuple_GET_ITEM(entry, 1))) {
            PyErr_SetString(PyExc_ValueError, "plans: (group, plan tuple) pairs");
            goto fail;
        }
        PyObject *plan = PyTuple_GET_ITEM(entry, 1);
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(plan); i++) {
            PyObject *item = PyTuple_GET_ITEM(plan, i);
            if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 3) {
                PyErr_SetString(PyExc_ValueError, "plan item: a tuple");
                goto fail;
            }
            PyObject *addrs = PyTuple_GET_ITEM(item, 3 < PyTuple_GET_SIZE(item) ? 3 : 0);
            naddrs += PyTuple_Check(addrs) ? PyTuple_GET_SIZE(addrs) : 0;
            nitems++;
        }
    }
    c->items = PyMem_Calloc((size_t)(nitems ? nitems : 1), sizeof *c->items);
    c->groups = PyMem_Calloc((size_t)(ngroups ? ngroups : 1), sizeof *c->groups);
    c->pool = PyMem_Calloc((size_t)(naddrs ? naddrs : 1), 8);
    if (c->items == NULL || c->groups == NULL || c->pool == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    uint64_t *pool = c->pool;
    for (Py_ssize_t g = 0; g < ngroups; g++) {
        PyObject *entry = PyTuple_GET_ITEM(plans, g), *plan = PyTuple_GET_ITEM(entry, 1);
        c->groups[g] = (struct cgroup){PyTuple_GET_ITEM(entry, 0), c->nitems,
                                       PyTuple_GET_SIZE(plan)};
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(plan); i++) {
            PyObject *item = PyTuple_GET_ITEM(plan, i);
            struct citem *ci = &c->items[c->nitems++];
            const char *type = PyUnicode_AsUTF8(PyTuple_GET_ITEM(item, 1));
            if (type == NULL)
                goto fail;
            ci->type = type[0];
            ci->key = PyTuple_GET_ITEM(item, 0);
            ci->item = item;
            if (ci->type == 'B' || ci->type == 'N')
                continue;
            if (!strchr("QqIiH", ci->type) || type[1] || PyTuple_GET_SIZE(item) < 6
                || !PyTuple_Check(PyTuple_GET_ITEM(item, 3))) {
                PyErr_Format(PyExc_ValueError, "plan item type %s unknown", type);
                goto fail;
            }
            PyObject *addrs = PyTuple_GET_ITEM(item, 3);
            if (addr_arg(PyTuple_GET_ITEM(item, 2), &ci->base) < 0)
                goto fail;
            ci->addrs = pool;
            ci->naddr = PyTuple_GET_SIZE(addrs);
            for (Py_ssize_t a = 0; a < ci->naddr; a++)
                if (addr_arg(PyTuple_GET_ITEM(addrs, a), pool++) < 0)
                    goto fail;
            ci->mode = (int)PyLong_AsLong(PyTuple_GET_ITEM(item, 4));
            if (ci->mode == -1 && PyErr_Occurred())
                goto fail;
            PyObject *num = PyTuple_GET_ITEM(item, 5);
            if (ci->mode == 0)
                ci->mul = PyLong_AsLongLong(num);
            else if (ci->mode == 1 || ci->mode == 2)
                ci->div = PyFloat_AsDouble(num);
            else {
                PyErr_Format(PyExc_ValueError, "plan item mode %d unknown", ci->mode);
                goto fail;
            }
            if (PyErr_Occurred())
                goto fail;
            if (ci->mode == 2 && PyTuple_GET_SIZE(item) > 6) {
                ci->bias = PyLong_AsLongLong(PyTuple_GET_ITEM(item, 6));
                if (ci->bias == -1 && PyErr_Occurred())
                    goto fail;
            }
        }
    }
    c->ngroups = ngroups;
    return c;
fail:
    compiled_free(c);
    return NULL;
}

/* one parsed item into out: as plan_into does for that item */
static int citem_into(Space *s, struct citem *ci, PyObject *out) {
    if (ci->type == 'B')
        return block_into(s, ci->item, out);
    if (ci->type == 'N')
        return net_into(s, ci->item, out);
    uint64_t add = 0;
    __int128 sum = 0;
    if (ci->base && rd_u64(s, ci->base, &add) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < ci->naddr; i++) {
        uint64_t a = ci->addrs[i] + add;
        switch (ci->type) {
        case 'Q': { uint64_t v; if (rd_u64(s, a, &v) < 0) return -1; sum += v; break; }
        case 'q': { int64_t v; if (vread(s, a, &v, 8) < 0) return -1; sum += v; break; }
        case 'I': { uint32_t v; if (rd_u32(s, a, &v) < 0) return -1; sum += v; break; }
        case 'i': { int32_t v; if (rd_s32(s, a, &v) < 0) return -1; sum += v; break; }
        default: { uint16_t v; if (rd_u16(s, a, &v) < 0) return -1; sum += v; break; }
        }
    }
    PyObject *value;
    if (ci->mode == 0)
        value = int128_to_py(sum * ci->mul);
    else if (ci->mode == 2)
        value = PyFloat_FromDouble((double)(uint64_t)(sum + ci->bias) / ci->div);
    else
        value = PyFloat_FromDouble((double)sum / ci->div);
    if (value == NULL)
        return -1;
    int rc = PyDict_SetItem(out, ci->key, value);
    Py_DECREF(value);
    return rc;
}

/* read_plans(plans, features) -> list of the names of groups that failed. plans is a
 * tuple of (group, plan tuple), parsed once and kept while the same tuple comes back; every
 * group that reads is added to features in order, a
 * group that raises AddressError or Inconsistent is named (its features left out) for
 * the caller to retry: one call for all the fixed-address groups of a sample. */
static PyObject *Space_read_plans(Space *s, PyObject *args) {
    PyObject *plans, *features;
    if (!PyArg_ParseTuple(args, "O!O!", &PyTuple_Type, &plans, &PyDict_Type, &features)
        || ready(s) < 0)
        return NULL;
    if (s->plans == NULL || s->plans->plans != plans) {
        struct compiled *c = compile_plans(plans);
        if (c == NULL)
            return NULL;
        compiled_free(s->plans);
        s->plans = c;
    }
    struct compiled *c = s->plans;
    PyObject *failed = PyList_New(0), *group = PyDict_New();
    if (failed == NULL || group == NULL)
        goto fail;
    for (Py_ssize_t g = 0; g < c->ngroups; g++) {
        struct cgroup *cg = &c->groups[g];
        int rc = 0;
        PyDict_Clear(group);
        for (Py_ssize_t i = cg->first; rc == 0 && i < cg->first + cg->count; i++)
            rc = citem_into(s, &c->items[i], group);
        if (rc < 0) {
            if (!(PyErr_ExceptionMatches(AddressError) || PyErr_ExceptionMatches(Inconsistent)
                  || PyErr_ExceptionMatches(PyExc_OverflowError)))
                goto fail;
            PyErr_Clear();
            if (PyList_Append(failed, cg->name) < 0)
                goto fail;
            continue;
        }
        if (PyDict_Update(features, group) < 0)
            goto fail;
    }
    Py_DECREF(group);
    return failed;
fail:
    Py_XDECREF(group);
    Py_XDECREF(failed);
    return NULL;
}

/* -- the kernel log: printk.KernelLog.read_new and the sampler's lines, in one call -- */
#define DESC_ID_MASK ((1ULL << 62) - 1)

struct log_rec {
    uint64_t seq;
    double ts;
    int level;
    PyObject *text;
};

/* read_log(params, next_id, next_seq, limit) -> (lines, errors, next_id, next_seq): the
 * records KernelLog.read_new returns, as the lines the sampler makes of them ("[ts] text")
 * and how many have level <= 3. params: (&prb, o_desc_ring, o_text_ring, o_count_bits,
 * o_descs, o_infos, o_head, o_tail, o_size_bits, o_data, desc_size, info_size, o_lpos,
 * o_seq, o_len); next_id None on the first call. The state changes only on success. */
static PyObject *Space_read_log(Space *s, PyObject *args) {
    enum { PRB, DESC_RING, TEXT_RING, COUNT_BITS, DESCS, INFOS, HEAD, TAIL, SIZE_BITS, DATA,
           DESC_SIZE, INFO_SIZE, LPOS, SEQ, LEN, N };
    PyObject *params, *next_id_arg, *lines = NULL, *out = NULL;
    unsigned long long next_seq;
    Py_ssize_t limit;
    uint64_t o[N];
    if (!PyArg_ParseTuple(args, "O!OKn", &PyTuple_Type, &params, &next_id_arg, &next_seq,
                          &limit) || ready(s) < 0)
        return NULL;
    if (PyTuple_GET_SIZE(params) != N || limit < 0) {
        PyErr_Format(PyExc_ValueError, "read_log() takes %d parameters and a limit >= 0", N);
        return NULL;
    }
    if (item_u64s(params, 0, o, N) < 0)
        return NULL;
    uint64_t rb, ring, descs, infos, head, tail, data, next_id = 0;
    uint32_t count_bits, size_bits;
    int have_next = next_id_arg != Py_None;
    if (have_next && addr_arg(next_id_arg, &next_id) < 0)
        return NULL;
    if (rd_u64(s, o[PRB], &rb) < 0)
        return NULL;
    ring = rb + o[DESC_RING];
    if (rd_u32(s, ring + o[COUNT_BITS], &count_bits) < 0 || rd_u64(s, ring + o[DESCS], &descs) < 0
        || rd_u64(s, ring + o[INFOS], &infos) < 0 || rd_u64(s, ring + o[HEAD], &head) < 0
        || rd_u64(s, ring + o[TAIL], &tail) < 0
        || rd_u32(s, rb + o[TEXT_RING] + o[SIZE_BITS], &size_bits) < 0
        || rd_u64(s, rb + o[TEXT_RING] + o[DATA], &data) < 0)
        return NULL;
    head &= DESC_ID_MASK;
    tail &= DESC_ID_MASK;
    uint64_t n_max = count_bits >= 62 ? UINT64_MAX : 1ULL << count_bits;
    uint64_t mask = count_bits >= 62 ? UINT64_MAX : n_max - 1;
    uint64_t ident = tail;
    if (have_next && ((next_id - tail) & DESC_ID_MASK) <= ((head - tail) & DESC_ID_MASK) + 1)
        ident = next_id; /* resume after what earlier calls read */
    uint64_t todo = (head + 1 - ident) & DESC_ID_MASK;
    if (todo > n_max)
        todo = n_max;
    struct log_rec *recs = NULL;
    Py_ssize_t nrec = 0, cap = 0;
    char *raw = NULL;
    size_t raw_cap = 0;
    for (uint64_t i = 0; i < todo; i++) {
        uint64_t idx = ident & mask, desc = descs + idx * o[DESC_SIZE], state_var, again;
        uint64_t lpos[2], si[2];
        uint16_t length;
        uint8_t fl[2];
        if (rd_u64(s, desc, &state_var) < 0)
            goto fail;
        if ((state_var & DESC_ID_MASK) != ident)
            goto next; /* recycled for a newer record: we fell behind */
        if ((state_var >> 62) == 0 || (state_var >> 62) == 1)
            break; /* still being written: read again next time */
        if ((state_var >> 62) != 2)
            goto next;
        uint64_t info = infos + idx * o[INFO_SIZE];
        if (vread(s, desc + o[LPOS], lpos, 16) < 0 || vread(s, info + o[SEQ], si, 16) < 0
            || rd_u16(s, info + o[LEN], &length) < 0 || vread(s, info + o[LEN] + 2, fl, 2) < 0)
            goto fail;
        uint64_t begin = lpos[0], nxt = lpos[1], start;
        if ((begin & 1) || begin == nxt)
            goto next; /* data-less record */
        long long want = length;
        if (size_bits >= 64) {
            start = begin;
        } else {
            uint64_t size = 1ULL << size_bits;
            start = begin & (size - 1);
            if (begin / size != nxt / size)
                start = 0; /* wrapped: the text starts at the ring's beginning */
            long long room = (long long)size - (long long)start - 8;
            if (room < want)
                want = room;
        }
        if (want < 0) {
            PyErr_Format(PyExc_ValueError, "read length %lld out of range", want);
            goto fail;
        }
        if ((size_t)want > raw_cap) {
            char *grown = PyMem_Realloc(raw, (size_t)want);
            if (grown == NULL) {
                PyErr_NoMemory();
                goto fail;
            }
            raw = grown;
            raw_cap = (size_t)want;
        }
        if (vread(s, data + start + 8, raw, (uint64_t)want) < 0 || rd_u64(s, desc, &again) < 0)
            goto fail;
        if (again != state_var)
            goto next; /* recycled while we read it */
        if (si[0] >= next_seq) {
            if (nrec == cap) {
                Py_ssize_t grow = cap ? 2 * cap : 16;
                struct log_rec *bigger = PyMem_Realloc(recs, (size_t)grow * sizeof *recs);
                if (bigger == NULL) {
                    PyErr_NoMemory();
                    goto fail;
                }
                recs = bigger;
                cap = grow;
            }
            PyObject *text = PyUnicode_DecodeUTF8(raw, (Py_ssize_t)want, "replace");
            if (text == NULL)
                goto fail;
            recs[nrec++] = (struct log_rec){si[0], (double)si[1] / 1e9, fl[1] >> 5, text};
        }
    next:
        ident = (ident + 1) & DESC_ID_MASK;
    }
    /* sort by seq, stably (records come nearly sorted: insertion sort) */
    for (Py_ssize_t i = 1; i < nrec; i++) {
        struct log_rec r = recs[i];
        Py_ssize_t j = i;
        while (j > 0 && recs[j - 1].seq > r.seq) {
            recs[j] = recs[j - 1];
            j--;
        }
        recs[j] = r;
    }
    /* records[-limit:] (records[-0:] is every record) */
    Py_ssize_t first = limit > 0 && nrec > limit ? nrec - limit : 0, errors = 0;
    lines = PyList_New(nrec - first);
    for (Py_ssize_t i = first; lines != NULL && i < nrec; i++) {
        char *number = PyOS_double_to_string(recs[i].ts, 'f', 6, 0, NULL);
        if (number == NULL)
            goto fail;
        size_t len = strlen(number);
        char padded[64];
        snprintf(padded, sizeof padded, "%*s", len < 12 ? 12 : (int)len, number);
        PyMem_Free(number);
        PyObject *line = PyUnicode_FromFormat("[%s] %U", padded, recs[i].text);
        if (line == NULL)
            goto fail;
        PyList_SET_ITEM(lines, i - first, line);
        errors += recs[i].level <= 3;
    }
    if (lines == NULL)
        goto fail;
    unsigned long long new_seq = nrec > first ? recs[nrec - 1].seq + 1 : next_seq;
    out = Py_BuildValue("(NnKK)", lines, errors, (unsigned long long)ident, new_seq);
    lines = NULL;
fail:
    Py_XDECREF(lines);
    for (Py_ssize_t i = 0; i < nrec; i++)
        Py_DECREF(recs[i].text);
    PyMem_Free(recs);
    PyMem_Free(raw);
    return out;
}

/* walk_list(head, limit): addresses of the list_head nodes after head */
static PyObject *Space_walk_list(Space *s, PyObject *args) {
    unsigned long long head;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "Kn", &head, &limit) || ready(s) < 0)
        return NULL;
    PyObject *nodes = PyList_New(0);
    uint64_t node = head, next;
    for (Py_ssize_t i = 0; nodes != NULL && i < limit; i++) {
        if (list_next(s, head, node, &next) < 0)
            goto fail;
        if (next == head)
            return nodes;
        PyObject *v = PyLong_FromUnsignedLongLong(next);
        if (v == NULL || PyList_Append(nodes, v) < 0) {
            Py_XDECREF(v);
            goto fail;
        }
        Py_DECREF(v);
        node = next;
    }
    if (nodes != NULL)
        too_long(head, limit);
fail:
    Py_XDECREF(nodes);
    return NULL;
}

static PyMethodDef Space_methods[] = {
    {"read", (PyCFunction)(void (*)(void))Space_read, METH_FASTCALL,
     "read(vaddr, length) -> bytes"},
    {"u64", (PyCFunction)Space_u64, METH_O, "u64(vaddr) -> int"},
    {"u32", (PyCFunction)Space_u32, METH_O, "u32(vaddr) -> int"},
    {"s32", (PyCFunction)Space_s32, METH_O, "s32(vaddr) -> int"},
    {"u16", (PyCFunction)Space_u16, METH_O, "u16(vaddr) -> int"},
    {"u64s", (PyCFunction)(void (*)(void))Space_u64s, METH_FASTCALL,
     "u64s(vaddr, count) -> tuple of int"},
    {"translate", (PyCFunction)Space_translate, METH_O,
     "translate(vaddr) -> guest physical address"},
    {"walk_list", (PyCFunction)Space_walk_list, METH_VARARGS,
     "walk_list(head, limit) -> list of node addresses (next->prev checked)"},
    {"tasks", (PyCFunction)Space_tasks, METH_VARARGS,
     "tasks(head, offsets, limit) -> list of raw task rows"},
    {"read_tasks", (PyCFunction)Space_read_tasks, METH_VARARGS,
     "read_tasks(head, offsets, limit, top) -> (features, task records), as read_tasks"},
    {"read_plan", (PyCFunction)Space_read_plan, METH_O,
     "read_plan(plan) -> features of one group of fixed-address reads"},
    {"read_plans", (PyCFunction)Space_read_plans, METH_VARARGS,
     "read_plans(plans, features) -> names of the groups that failed"},
    {"read_log", (PyCFunction)Space_read_log, METH_VARARGS,
     "read_log(params, next_id, next_seq, limit) -> (lines, errors, next_id, next_seq)"},
    {"flush", (PyCFunction)Space_flush, METH_NOARGS, "forget cached page-table walks"},
    {"close", (PyCFunction)Space_close, METH_NOARGS, "unmap the RAM file"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SpaceType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vmroc.introspect._accel._vmread.Space",
    .tp_basicsize = sizeof(Space),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Space(path, page_table, phys_base, la57=False, page_offset=None): "
              "kernel virtual memory of one guest on its RAM file",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Space_init,
    .tp_dealloc = (destructor)Space_dealloc,
    .tp_methods = Space_methods,
};

/* errors(AddressError, Inconsistent): the exception classes to raise */
static PyObject *set_errors(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *address_error_cls, *inconsistent_cls;
    if (!PyArg_ParseTuple(args, "OO", &address_error_cls, &inconsistent_cls))
        return NULL;
    Py_XSETREF(AddressError, Py_NewRef(address_error_cls));
    Py_XSETREF(Inconsistent, Py_NewRef(inconsistent_cls));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"errors", set_errors, METH_VARARGS, "errors(AddressError, Inconsistent)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_vmread", "Guest kernel reads on a RAM file (native).", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__vmread(void) {
    if (PyType_Ready(&SpaceType) < 0)
        return NULL;
    for (int k = 0; k < N_TASK_KEYS; k++)
        if (task_keys[k] == NULL
            && (task_keys[k] = PyUnicode_InternFromString(task_key_names[k])) == NULL)
            return NULL;
    if (task_template == NULL) {
        if ((task_template = PyDict_New()) == NULL)
            return NULL;
        for (int k = 0; k < N_TASK_KEYS; k++)
            if (PyDict_SetItem(task_template, task_keys[k], Py_None) < 0)
                return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&SpaceType);
    if (PyModule_AddObject(m, "Space", (PyObject *)&SpaceType) < 0) {
        Py_DECREF(&SpaceType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
