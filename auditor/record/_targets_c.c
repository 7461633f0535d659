/* The C fast path of targets.RecentTargets (record="redirects"): ``skips`` and
 * ``note`` over the same shared map of recent redirect targets, with zlib's crc32.
 *
 * TargetTable(table, seed, span, mark_steps) holds a writable view of the table's
 * mmap (so the map outlives RecentTargets.close while this object lives). The layout
 * constants are targets.py's; tests/test_native.py compares both ways.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *S_RAW_PATH;

/* targets.RecentTargets.skips and .note over the shared table's map. skip: whether a
 * request cannot be a follow-up by the cheap checks (no redirect noted within the
 * window, or none to a path of its path's bucket); a path that needs decoding is left
 * to the Python path. note: a redirect to ``path`` answered ``client`` at ``now``. */
#define TARGETS_NEWEST_WORD (2 * (1 << 15))
#define TARGETS_PATHS (8 * (TARGETS_NEWEST_WORD + 1))
#define TARGETS_PATH_MASK ((1 << 16) - 1)

typedef struct {
    PyObject_HEAD
    Py_buffer map;
    int has_map;
    unsigned long seed;
    double span;
    long mark_steps;
} TargetTable;

static unsigned long crc_table[256];

static void
crc_init(void)
{
    for (unsigned long n = 0; n < 256; n++) {
        unsigned long c = n;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320UL ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

/* zlib.crc32(data, seed) */
static unsigned long
crc32_of(const unsigned char *data, Py_ssize_t n, unsigned long seed)
{
    unsigned long c = seed ^ 0xFFFFFFFFUL;
    for (Py_ssize_t i = 0; i < n; i++) c = crc_table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
    return (c ^ 0xFFFFFFFFUL) & 0xFFFFFFFFUL;
}

static PyObject *
TargetTable_skip(TargetTable *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "skip(scope, at)");
        return NULL;
    }
    double at = PyFloat_AsDouble(args[1]);
    if (at == -1.0 && PyErr_Occurred()) return NULL;
    if (!self->has_map) Py_RETURN_FALSE;
    const unsigned char *buf = (const unsigned char *)self->map.buf;
    unsigned long long newest = ((const unsigned long long *)buf)[TARGETS_NEWEST_WORD];
    if ((double)newest < at - self->span) Py_RETURN_TRUE;
    PyObject *scope = args[0];
    if (!PyDict_CheckExact(scope)) Py_RETURN_FALSE;
    PyObject *raw = PyDict_GetItemWithError(scope, S_RAW_PATH);
    if (raw == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_FALSE;
    }
    if (!PyBytes_CheckExact(raw) || PyBytes_GET_SIZE(raw) == 0) Py_RETURN_FALSE;
    const unsigned char *path = (const unsigned char *)PyBytes_AS_STRING(raw);
    Py_ssize_t n = PyBytes_GET_SIZE(raw);
    for (Py_ssize_t i = 0; i < n; i++)
        if (path[i] == '%' || path[i] >= 0x80) Py_RETURN_FALSE; /* decoded: Python's */
    unsigned char mark = buf[TARGETS_PATHS + (crc32_of(path, n, self->seed) & TARGETS_PATH_MASK)];
    if (mark == 0) Py_RETURN_TRUE;
    long now_mark = (((long)at) >> 4) % 255 + 1;
    long age = ((now_mark - (long)mark) % 255 + 255) % 255;
    return PyBool_FromLong(age > self->mark_steps);
}

static PyObject *
TargetTable_note(TargetTable *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyUnicode_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "note(client: str, path: bytes, now: float)");
        return NULL;
    }
    double now = PyFloat_AsDouble(args[2]);
    if (now == -1.0 && PyErr_Occurred()) return NULL;
    if (!self->has_map) Py_RETURN_NONE;
    PyObject *client = PyUnicode_AsEncodedString(args[0], "utf-8", "surrogatepass");
    if (client == NULL) return NULL;
    unsigned long client_seed = crc32_of((const unsigned char *)PyBytes_AS_STRING(client),
                                         PyBytes_GET_SIZE(client), self->seed);
    Py_DECREF(client);
    const unsigned char *path = (const unsigned char *)PyBytes_AS_STRING(args[1]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[1]);
    unsigned long long key = crc32_of(path, n, client_seed);
    unsigned long long *slots = (unsigned long long *)self->map.buf;
    unsigned long long second_now = (unsigned long long)(long long)now & 0xFFFFFFFFULL;
    unsigned long long entry = key << 32 | second_now;
    size_t i = (size_t)(key & ((1 << 15) - 1)) << 1;
    unsigned long long first = slots[i], second = slots[i + 1];
    int older_first = (first & 0xFFFFFFFFULL) <= (second & 0xFFFFFFFFULL);
    if (first >> 32 == key || (second >> 32 != key && older_first)) slots[i] = entry;
    else slots[i + 1] = entry;
    if (slots[TARGETS_NEWEST_WORD] < second_now) slots[TARGETS_NEWEST_WORD] = second_now;
    unsigned char *marks = (unsigned char *)self->map.buf + TARGETS_PATHS;
    marks[crc32_of(path, n, self->seed) & TARGETS_PATH_MASK] =
        (unsigned char)((((long)now) >> 4) % 255 + 1);
    Py_RETURN_NONE;
}

static int
TargetTable_init(TargetTable *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"table", "seed", "span", "mark_steps", NULL};
    PyObject *table;
    unsigned long seed;
    double span;
    long mark_steps;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Okdl:TargetTable", kwlist, &table, &seed,
                                     &span, &mark_steps))
        return -1;
    if (self->has_map) {
        PyBuffer_Release(&self->map);
        self->has_map = 0;
    }
    if (PyObject_GetBuffer(table, &self->map, PyBUF_WRITABLE) < 0) return -1;
    if (self->map.len < TARGETS_PATHS + TARGETS_PATH_MASK + 1) {
        PyBuffer_Release(&self->map);
        PyErr_SetString(PyExc_ValueError, "the table of targets is too small");
        return -1;
    }
    self->has_map = 1;
    self->seed = seed & 0xFFFFFFFFUL;
    self->span = span;
    self->mark_steps = mark_steps;
    return 0;
}

static void
TargetTable_dealloc(TargetTable *self)
{
    if (self->has_map) PyBuffer_Release(&self->map);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef TargetTable_methods[] = {
    {"skip", (PyCFunction)(void (*)(void))TargetTable_skip, METH_FASTCALL,
     "skip(scope, at): whether the request cannot be a follow-up, by the cheap checks."},
    {"note", (PyCFunction)(void (*)(void))TargetTable_note, METH_FASTCALL,
     "note(client, path, now): a redirect to path answered client at now."},
    {NULL}};

static PyTypeObject TargetTableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "auditor.record._targets_c.TargetTable",
    .tp_doc = "RecentTargets.skips and .note over the table's map (targets.py).",
    .tp_basicsize = sizeof(TargetTable),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)TargetTable_init,
    .tp_dealloc = (destructor)TargetTable_dealloc,
    .tp_methods = TargetTable_methods,
};

static struct PyModuleDef targets_c_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "auditor.record._targets_c",
    .m_doc = "The C fast path of auditor.record.targets (optional).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__targets_c(void)
{
    if ((S_RAW_PATH = PyUnicode_InternFromString("raw_path")) == NULL) return NULL;
    crc_init();
    if (PyType_Ready(&TargetTableType) < 0) return NULL;
    PyObject *module = PyModule_Create(&targets_c_module);
    if (module == NULL) return NULL;
    Py_INCREF(&TargetTableType);
    if (PyModule_AddObject(module, "TargetTable", (PyObject *)&TargetTableType) < 0) {
        Py_DECREF(&TargetTableType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
