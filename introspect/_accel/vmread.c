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

typedef struct {
    PyObject_HEAD
    uint8_t *mem;
    uint64_t size, low, high;
    uint64_t page_table, phys_base, page_offset, direct_end;
    int la57, has_page_offset;
    uint32_t gen; /* TLB entries of older generations are stale */
    uint32_t tlb_gen[TLB_SIZE];
    uint64_t tlb_page[TLB_SIZE], tlb_phys[TLB_SIZE];
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

static void Space_dealloc(Space *s) {
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
        uint64_t next, t, parent, mm, times[2], faults[2], rss[4] = {0, 0, 0, 0};
        int32_t pid, tgid, ppid = 0, exit_state;
        uint32_t state, flags;
        char comm[16];
        if (list_next(s, head, node, &next) < 0)
            goto fail;
        if (next == head)
            return rows;
        t = next - o[O_TASKS];
        if (rd_s32(s, t + o[O_PID], &pid) < 0)
            goto fail;
        if (!(0 < pid && pid < PID_MAX)) {
            char message[64];
            snprintf(message, sizeof message, "task at %#llx has pid %d",
                     (unsigned long long)t, pid);
            inconsistent(message);
            goto fail;
        }
        if (rd_s32(s, t + o[O_TGID], &tgid) < 0 || rd_u32(s, t + o[O_STATE], &state) < 0
            || rd_s32(s, t + o[O_EXIT], &exit_state) < 0
            || rd_u32(s, t + o[O_FLAGS], &flags) < 0 || rd_u64(s, t + o[O_PARENT], &parent) < 0
            || rd_u64(s, t + o[O_MM], &mm) < 0 || vread(s, t + o[O_COMM], comm, 16) < 0
            || rd_u64(s, t + o[O_UTIME], &times[0]) < 0
            || rd_u64(s, t + o[O_STIME], &times[1]) < 0
            || rd_u64(s, t + o[O_MINFLT], &faults[0]) < 0
            || rd_u64(s, t + o[O_MAJFLT], &faults[1]) < 0)
            goto fail;
        if (parent && rd_s32(s, parent + o[O_TGID], &ppid) < 0)
            goto fail;
        if (mm && vread(s, mm + o[O_RSS], rss, sizeof rss) < 0)
            goto fail;
        PyObject *row = Py_BuildValue("(Kiiiy#IiIKKKKKKK)", (unsigned long long)t, pid, tgid,
                                      ppid, comm, (Py_ssize_t)16, state, exit_state, flags,
                                      (unsigned long long)times[0],
                                      (unsigned long long)times[1],
                                      (unsigned long long)faults[0],
                                      (unsigned long long)faults[1],
                                      (unsigned long long)rss[0], (unsigned long long)rss[1],
                                      (unsigned long long)rss[3]);
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
