/* The C fast path of rows.RowBuilder.build_row: the same row, built without the
 * interpreter, for the common request whose derived values are all in the builder's
 * caches already.
 *
 * FastRows(header_index, urls, locations, connections, servers, keys, worker_id,
 *          store_client_ip, fallback).build(item)
 *
 * reads to_portable's tuple and the builder's own cache dicts (the same objects, so
 * what the Python path learns the fast path finds), and returns the row build_row
 * would. Anything else -- a cache miss, trusted proxies (never constructed then), an
 * X-Forwarded-For, several Locations, a value of unusual type or size -- is handed to
 * ``fallback`` (the Python build_row) untouched, so the answer never differs: the
 * tests build every row both ways and compare.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

#define MAX_VALUE_CHARS 8192
#define ITEM_SIZE 17

/* Slots of rows._REQUEST_HEADER_INDEX, in its order. */
enum { HOST, USER_AGENT, CONTENT_LENGTH, TRANSFER_ENCODING, CONTENT_TYPE, X_PROTO, X_HOST,
       X_FOR, FORWARDED, REQUEST_ID, AUTHORIZATION, COOKIE, N_REQUEST_FIELDS };

typedef struct {
    PyObject_HEAD
    PyObject *header_index; /* dict: lowercase header name (bytes) -> slot (int) */
    PyObject *urls;         /* RowBuilder._urls */
    PyObject *locations;    /* RowBuilder._locations */
    PyObject *connections;  /* RowBuilder._connections */
    PyObject *servers;      /* RowBuilder._servers */
    PyObject *keys;         /* RowBuilder._keys */
    PyObject *worker_id;
    PyObject *fallback;     /* the Python build_row */
    int store_client_ip;
    Py_ssize_t built;       /* rows built here */
    Py_ssize_t handed_on;   /* rows handed to fallback */
} FastRows;

static PyObject *EMPTY_STR;  /* "" */
static PyObject *HTTP_STR;   /* "http" */
static PyObject *LOWER_STR;  /* "lower" */
static PyObject *ZERO, *ONE;

static int
ascii_ieq(const char *s, Py_ssize_t n, const char *lower_literal, Py_ssize_t m)
{
    if (n != m) return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z') c += 32;
        if (c != (unsigned char)lower_literal[i]) return 0;
    }
    return 1;
}

static int
has_ascii_upper(const char *s, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (s[i] >= 'A' && s[i] <= 'Z') return 1;
    return 0;
}

/* "chunked" in value.lower(): for latin-1 text only ASCII letters lower to ASCII. */
static int
contains_chunked(const char *s, Py_ssize_t n)
{
    static const char word[] = "chunked";
    for (Py_ssize_t i = 0; i + 7 <= n; i++)
        if (ascii_ieq(s + i, 7, word, 7)) return 1;
    return 0;
}

/* str.lower(), without a new object for text that has no ASCII capital and is ASCII. */
static PyObject *
lowered(PyObject *text)
{
    if (PyUnicode_IS_ASCII(text) &&
        !has_ascii_upper((const char *)PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text))) {
        Py_INCREF(text);
        return text;
    }
    return PyObject_CallMethodNoArgs(text, LOWER_STR);
}

/* round((ended - started) * 1e6) / 1000, as Python computes it (round half to even). */
static double
duration_ms(double started, double ended)
{
    double x = (ended - started) * 1e6;
    double r = round(x);
    if (fabs(x - r) == 0.5) r = 2.0 * round(x / 2.0);
    return r / 1000.0;
}

/* A new tuple holding ``values`` (new references). */
static PyObject *
tuple_of(PyObject **values, Py_ssize_t n)
{
    PyObject *row = PyTuple_New(n);
    if (row == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_INCREF(values[i]);
        PyTuple_SET_ITEM(row, i, values[i]);
    }
    return row;
}

#define HAND_ON goto hand_on

static PyObject *
FastRows_build(FastRows *self, PyObject *item)
{
    PyObject *decoded[N_REQUEST_FIELDS] = {NULL};
    PyObject *req[N_REQUEST_FIELDS] = {NULL}; /* borrowed bytes */
    PyObject *scheme = NULL, *host = NULL, *url_key = NULL, *loc_text = NULL, *loc_key = NULL;
    PyObject *status_obj = NULL, *duration = NULL, *body_size = NULL;
    PyObject *cache_control = NULL, *expires = NULL, *row = NULL;
    PyObject *location = Py_None, *location_url = Py_None;
    PyObject *connection_key = Py_None, *client_hash = Py_None, *client_ip = Py_None;
    int has_authorization = 0, has_cookie = 0, chunked = 0;
    /* What the cache dicts hold, with references of our own: building the row
     * allocates, and a collection run then may let another thread clear a cache. */
    PyObject *held[5];
    int n_held = 0;
#define HOLD(x) (Py_INCREF(x), held[n_held++] = (x))

    if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != ITEM_SIZE) HAND_ON;
    PyObject *method = PyTuple_GET_ITEM(item, 0);
    PyObject *server_scheme = PyTuple_GET_ITEM(item, 1);
    PyObject *server = PyTuple_GET_ITEM(item, 2);
    PyObject *client = PyTuple_GET_ITEM(item, 3);
    PyObject *path = PyTuple_GET_ITEM(item, 4);
    PyObject *raw_path = PyTuple_GET_ITEM(item, 5);
    PyObject *query_string = PyTuple_GET_ITEM(item, 6);
    PyObject *headers = PyTuple_GET_ITEM(item, 7);
    PyObject *version = PyTuple_GET_ITEM(item, 8);
    PyObject *route = PyTuple_GET_ITEM(item, 9);
    PyObject *started_at = PyTuple_GET_ITEM(item, 10);
    PyObject *ended_at = PyTuple_GET_ITEM(item, 11);
    PyObject *status = PyTuple_GET_ITEM(item, 12);
    PyObject *response_headers = PyTuple_GET_ITEM(item, 13);
    PyObject *response_body_size = PyTuple_GET_ITEM(item, 14);
    PyObject *complete = PyTuple_GET_ITEM(item, 15);
    PyObject *error = PyTuple_GET_ITEM(item, 16);

    if (route != Py_None && !PyUnicode_CheckExact(route)) HAND_ON; /* under a Mount */
    if (!PyFloat_CheckExact(started_at) || !PyFloat_CheckExact(ended_at)) HAND_ON;
    if (!isfinite((PyFloat_AS_DOUBLE(ended_at) - PyFloat_AS_DOUBLE(started_at)) * 1e6)) HAND_ON;
    if (!PyUnicode_CheckExact(method) || !PyUnicode_CheckExact(version)) HAND_ON;
    if (error != Py_None && !PyUnicode_CheckExact(error)) HAND_ON;

    /* Request headers: the first occurrence of each field wins. */
    if (headers != Py_None) {
        if (!PyList_CheckExact(headers)) HAND_ON;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers); i++) {
            PyObject *pair = PyList_GET_ITEM(headers, i);
            if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2) HAND_ON;
            PyObject *name = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
            if (!PyBytes_CheckExact(name) || !PyBytes_CheckExact(value)) HAND_ON;
            PyObject *slot = PyDict_GetItemWithError(self->header_index, name);
            if (slot == NULL) {
                if (PyErr_Occurred()) goto error;
                if (!has_ascii_upper(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))) continue;
                PyObject *lower = PyObject_CallMethodNoArgs(name, LOWER_STR);
                if (lower == NULL) goto error;
                slot = PyDict_GetItemWithError(self->header_index, lower);
                Py_DECREF(lower);
                if (slot == NULL) {
                    if (PyErr_Occurred()) goto error;
                    continue;
                }
            }
            long index = PyLong_AsLong(slot);
            if (index < 0 || index >= N_REQUEST_FIELDS) HAND_ON;
            if (index == AUTHORIZATION) has_authorization = 1;
            else if (index == COOKIE) has_cookie = 1;
            else if (req[index] == NULL) {
                if (PyBytes_GET_SIZE(value) > MAX_VALUE_CHARS) HAND_ON;
                req[index] = value;
            }
        }
    }
    if (req[X_FOR] != NULL) HAND_ON; /* the forwarded client's hash: the Python path */
    if (req[HOST] == NULL || PyBytes_GET_SIZE(req[HOST]) == 0) HAND_ON;
    for (int i = 0; i < N_REQUEST_FIELDS; i++) {
        if (req[i] != NULL) {
            decoded[i] = PyUnicode_DecodeLatin1(PyBytes_AS_STRING(req[i]),
                                                PyBytes_GET_SIZE(req[i]), NULL);
            if (decoded[i] == NULL) goto error;
        }
    }

    /* Status and response headers. */
    long status_value;
    if (status == Py_None) status_value = 0;
    else if (PyLong_CheckExact(status)) {
        int overflow;
        status_value = PyLong_AsLongAndOverflow(status, &overflow);
        if (overflow || (status_value == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            HAND_ON;
        }
    }
    else HAND_ON;
    if (status_value == 0) status_value = 500;
    int redirect = status_value >= 300 && status_value < 400;
    PyObject *location_bytes = NULL, *cache_control_bytes = NULL, *expires_bytes = NULL;
    if (response_headers != Py_None) {
        if (!PyList_CheckExact(response_headers)) HAND_ON;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(response_headers); i++) {
            PyObject *pair = PyList_GET_ITEM(response_headers, i);
            if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2) HAND_ON;
            PyObject *name = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
            if (!PyBytes_CheckExact(name) || !PyBytes_CheckExact(value)) HAND_ON;
            const char *n = PyBytes_AS_STRING(name);
            Py_ssize_t len = PyBytes_GET_SIZE(name);
            if (ascii_ieq(n, len, "location", 8)) {
                if (location_bytes != NULL) HAND_ON; /* several: locations_json */
                location_bytes = value;
            }
            else if (redirect && ascii_ieq(n, len, "cache-control", 13)) cache_control_bytes = value;
            else if (redirect && ascii_ieq(n, len, "expires", 7)) expires_bytes = value;
        }
    }

    /* Client and server: their keys and addresses come from the builder's caches. */
    if (client != Py_None) {
        if (!PyTuple_CheckExact(client) || PyTuple_GET_SIZE(client) != 2) HAND_ON;
        client_ip = PyTuple_GET_ITEM(client, 0);
        if (client_ip != Py_None && !PyUnicode_CheckExact(client_ip)) HAND_ON;
        connection_key = PyDict_GetItemWithError(self->connections, client);
        if (connection_key == NULL) {
            if (PyErr_Occurred()) { PyErr_Clear(); HAND_ON; } /* unhashable */
            connection_key = Py_None;
            if (client_ip != Py_None && PyUnicode_GET_LENGTH(client_ip)) HAND_ON;
        }
        HOLD(connection_key);
        if (client_ip != Py_None && PyUnicode_GET_LENGTH(client_ip)) {
            client_hash = PyDict_GetItemWithError(self->keys, client_ip);
            if (client_hash == NULL) {
                if (PyErr_Occurred()) goto error;
                HAND_ON;
            }
            HOLD(client_hash);
        }
    }
    if (!PyTuple_CheckExact(server)) HAND_ON;
    PyObject *server_addr = PyDict_GetItemWithError(self->servers, server);
    if (server_addr == NULL) {
        if (PyErr_Occurred()) { PyErr_Clear(); HAND_ON; }
        HAND_ON;
    }
    HOLD(server_addr);

    if (server_scheme == Py_None || (PyUnicode_CheckExact(server_scheme) &&
                                     PyUnicode_GET_LENGTH(server_scheme) == 0))
        server_scheme = HTTP_STR;
    else if (!PyUnicode_CheckExact(server_scheme)) HAND_ON;
    scheme = lowered(server_scheme);
    if (scheme == NULL) goto error;
    host = lowered(decoded[HOST]);
    if (host == NULL) goto error;

    /* The URL's derived columns: a cache hit, or the Python path. */
    int raw_true = PyObject_IsTrue(raw_path);
    if (raw_true < 0) goto error;
    url_key = PyTuple_Pack(5, scheme, host, raw_true ? raw_path : path, query_string, route);
    if (url_key == NULL) goto error;
    PyObject *derived = PyDict_GetItemWithError(self->urls, url_key);
    if (derived == NULL) {
        if (PyErr_Occurred()) { PyErr_Clear(); HAND_ON; }
        HAND_ON;
    }
    if (!PyTuple_CheckExact(derived) || PyTuple_GET_SIZE(derived) != 4) HAND_ON;
    HOLD(derived);
    PyObject *sent_url = PyTuple_GET_ITEM(derived, 2);

    if (location_bytes != NULL) {
        if (PyBytes_GET_SIZE(location_bytes) > MAX_VALUE_CHARS) HAND_ON;
        loc_text = PyUnicode_DecodeLatin1(PyBytes_AS_STRING(location_bytes),
                                          PyBytes_GET_SIZE(location_bytes), NULL);
        if (loc_text == NULL) goto error;
        loc_key = PyTuple_Pack(2, sent_url, loc_text);
        if (loc_key == NULL) goto error;
        PyObject *found = PyDict_GetItemWithError(self->locations, loc_key);
        if (found == NULL) {
            if (PyErr_Occurred()) goto error;
            HAND_ON;
        }
        if (!PyTuple_CheckExact(found) || PyTuple_GET_SIZE(found) != 2) HAND_ON;
        HOLD(found);
        location = PyTuple_GET_ITEM(found, 0);
        location_url = PyTuple_GET_ITEM(found, 1);
    }
    if (cache_control_bytes != NULL) {
        if (PyBytes_GET_SIZE(cache_control_bytes) > MAX_VALUE_CHARS) HAND_ON;
        cache_control = PyUnicode_DecodeLatin1(PyBytes_AS_STRING(cache_control_bytes),
                                               PyBytes_GET_SIZE(cache_control_bytes), NULL);
        if (cache_control == NULL) goto error;
    }
    if (expires_bytes != NULL) {
        if (PyBytes_GET_SIZE(expires_bytes) > MAX_VALUE_CHARS) HAND_ON;
        expires = PyUnicode_DecodeLatin1(PyBytes_AS_STRING(expires_bytes),
                                         PyBytes_GET_SIZE(expires_bytes), NULL);
        if (expires == NULL) goto error;
    }

    if (req[CONTENT_LENGTH] != NULL) {
        const char *s = PyBytes_AS_STRING(req[CONTENT_LENGTH]);
        Py_ssize_t n = PyBytes_GET_SIZE(req[CONTENT_LENGTH]);
        int digits = n > 0;
        for (Py_ssize_t i = 0; i < n && digits; i++) digits = s[i] >= '0' && s[i] <= '9';
        if (digits) {
            body_size = PyLong_FromString(s, NULL, 10);
            if (body_size == NULL) goto error;
        }
    }
    if (req[TRANSFER_ENCODING] != NULL)
        chunked = contains_chunked(PyBytes_AS_STRING(req[TRANSFER_ENCODING]),
                                   PyBytes_GET_SIZE(req[TRANSFER_ENCODING]));
    int complete_true = PyObject_IsTrue(complete);
    if (complete_true < 0) goto error;
    status_obj = PyLong_FromLong(status_value);
    if (status_obj == NULL) goto error;
    duration = PyFloat_FromDouble(
        duration_ms(PyFloat_AS_DOUBLE(started_at), PyFloat_AS_DOUBLE(ended_at)));
    if (duration == NULL) goto error;
    if (PyUnicode_GET_LENGTH(method) == 0) method = EMPTY_STR;

#define V(x) ((x) != NULL ? (x) : Py_None)
    int is_short = body_size == NULL && cache_control == NULL && expires == NULL &&
                   error == Py_None && req[CONTENT_TYPE] == NULL && req[X_PROTO] == NULL &&
                   req[X_HOST] == NULL && req[FORWARDED] == NULL && req[REQUEST_ID] == NULL &&
                   (client_ip == Py_None || !self->store_client_ip);
    if (is_short) {
        /* rows.RowBuilder.build_row's short row, in SHORT_COLUMNS order */
        PyObject *values[] = {
            started_at, duration, method, scheme, host,
            PyTuple_GET_ITEM(derived, 0), PyTuple_GET_ITEM(derived, 1),
            PyTuple_GET_ITEM(derived, 3), route, status_obj, location, location_url,
            chunked ? ONE : ZERO, response_body_size,
            complete_true ? ONE : ZERO, server_scheme, decoded[HOST], server_addr,
            client_hash, connection_key, V(decoded[USER_AGENT]), version, self->worker_id,
            has_authorization ? ONE : ZERO, has_cookie ? ONE : ZERO,
        };
        row = tuple_of(values, sizeof(values) / sizeof(values[0]));
        if (row == NULL) goto error;
    }
    else {
        /* the full row, in ROW_COLUMNS order */
        PyObject *values[] = {
            started_at, duration, method, scheme, host,
            PyTuple_GET_ITEM(derived, 0), PyTuple_GET_ITEM(derived, 1),
            PyTuple_GET_ITEM(derived, 3), route, status_obj, location, location_url,
            Py_None, V(body_size), chunked ? ONE : ZERO, V(decoded[CONTENT_TYPE]),
            response_body_size, complete_true ? ONE : ZERO, V(cache_control),
            V(expires), V(decoded[X_PROTO]), V(decoded[X_HOST]), V(decoded[FORWARDED]),
            server_scheme, decoded[HOST], server_addr, client_hash, connection_key,
            self->store_client_ip ? client_ip : Py_None, V(decoded[USER_AGENT]),
            V(decoded[REQUEST_ID]), version, error, self->worker_id,
            has_authorization ? ONE : ZERO, has_cookie ? ONE : ZERO, Py_None,
        };
        row = tuple_of(values, sizeof(values) / sizeof(values[0]));
        if (row == NULL) goto error;
    }
#undef V
    self->built++;
    goto done;

hand_on:
    self->handed_on++;
    row = PyObject_CallOneArg(self->fallback, item);
    goto done;
error:
    row = NULL;
done:
    for (int i = 0; i < n_held; i++) Py_DECREF(held[i]);
#undef HOLD
    for (int i = 0; i < N_REQUEST_FIELDS; i++) Py_XDECREF(decoded[i]);
    Py_XDECREF(scheme);
    Py_XDECREF(host);
    Py_XDECREF(url_key);
    Py_XDECREF(loc_text);
    Py_XDECREF(loc_key);
    Py_XDECREF(status_obj);
    Py_XDECREF(duration);
    Py_XDECREF(body_size);
    Py_XDECREF(cache_control);
    Py_XDECREF(expires);
    return row;
}

static int
FastRows_init(FastRows *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"header_index", "urls", "locations", "connections", "servers",
                             "keys", "worker_id", "store_client_ip", "fallback", NULL};
    PyObject *header_index, *urls, *locations, *connections, *servers, *keys, *worker_id;
    PyObject *fallback;
    int store_client_ip;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O!O!O!O!UpO:FastRows", kwlist,
                                     &PyDict_Type, &header_index, &PyDict_Type, &urls,
                                     &PyDict_Type, &locations, &PyDict_Type, &connections,
                                     &PyDict_Type, &servers, &PyDict_Type, &keys, &worker_id,
                                     &store_client_ip, &fallback))
        return -1;
    PyObject **fields[] = {&self->header_index, &self->urls, &self->locations,
                           &self->connections, &self->servers, &self->keys,
                           &self->worker_id, &self->fallback};
    PyObject *given[] = {header_index, urls, locations, connections, servers, keys,
                         worker_id, fallback};
    for (int i = 0; i < 8; i++) {
        Py_INCREF(given[i]);
        Py_XSETREF(*fields[i], given[i]);
    }
    self->store_client_ip = store_client_ip;
    return 0;
}

static int
FastRows_traverse(FastRows *self, visitproc visit, void *arg)
{
    Py_VISIT(self->header_index);
    Py_VISIT(self->urls);
    Py_VISIT(self->locations);
    Py_VISIT(self->connections);
    Py_VISIT(self->servers);
    Py_VISIT(self->keys);
    Py_VISIT(self->worker_id);
    Py_VISIT(self->fallback);
    return 0;
}

static int
FastRows_clear(FastRows *self)
{
    Py_CLEAR(self->header_index);
    Py_CLEAR(self->urls);
    Py_CLEAR(self->locations);
    Py_CLEAR(self->connections);
    Py_CLEAR(self->servers);
    Py_CLEAR(self->keys);
    Py_CLEAR(self->worker_id);
    Py_CLEAR(self->fallback);
    return 0;
}

static void
FastRows_dealloc(FastRows *self)
{
    PyObject_GC_UnTrack(self);
    FastRows_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
FastRows_counts(FastRows *self, void *closure)
{
    return Py_BuildValue("(nn)", self->built, self->handed_on);
}

static PyMethodDef FastRows_methods[] = {
    {"build", (PyCFunction)FastRows_build, METH_O,
     "build(item) -> the row build_row makes of to_portable's tuple"},
    {NULL}};

static PyGetSetDef FastRows_getset[] = {
    {"counts", (getter)FastRows_counts, NULL,
     "(rows built here, rows handed to the Python path)", NULL},
    {NULL}};

static PyTypeObject FastRowsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "auditor.record._rows_c.FastRows",
    .tp_doc = "The C fast path of RowBuilder.build_row over the builder's caches.",
    .tp_basicsize = sizeof(FastRows),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)FastRows_init,
    .tp_dealloc = (destructor)FastRows_dealloc,
    .tp_traverse = (traverseproc)FastRows_traverse,
    .tp_clear = (inquiry)FastRows_clear,
    .tp_methods = FastRows_methods,
    .tp_getset = FastRows_getset,
};

static struct PyModuleDef rows_c_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "auditor.record._rows_c",
    .m_doc = "The C fast path of auditor.record.rows (optional: built when a compiler is there).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__rows_c(void)
{
    EMPTY_STR = PyUnicode_InternFromString("");
    HTTP_STR = PyUnicode_InternFromString("http");
    LOWER_STR = PyUnicode_InternFromString("lower");
    ZERO = PyLong_FromLong(0);
    ONE = PyLong_FromLong(1);
    if (EMPTY_STR == NULL || HTTP_STR == NULL || LOWER_STR == NULL || ZERO == NULL || ONE == NULL)
        return NULL;
    if (PyType_Ready(&FastRowsType) < 0) return NULL;
    PyObject *module = PyModule_Create(&rows_c_module);
    if (module == NULL) return NULL;
    Py_INCREF(&FastRowsType);
    if (PyModule_AddObject(module, "FastRows", (PyObject *)&FastRowsType) < 0) {
        Py_DECREF(&FastRowsType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
