/* The C fast path of the recorder's per-request capture: middleware.Exchange and
 * rows.to_portable, the only work the recorder does between two responses.
 *
 * Exchange(scope, send, started_at, recorder=None) behaves as middleware.Exchange
 * (RedirectsExchange when ``recorder`` is given): its ``send`` reads the response
 * status, byte count, end time and the headers a row needs, and returns the
 * server's send(message). to_portable(exchange) makes rows.to_portable's tuple of an
 * Exchange of this module whose scope is a plain dict holding every key; any other
 * capture goes to the Python to_portable given to configure(), and a route under a
 * Mount to its route_reference. Submitter is Writer.submit, and Watch middleware.Watch
 * (record="redirects"). The tests run the recorder's suite on both paths.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <time.h>

typedef struct {
    PyObject_HEAD
    PyObject *scope;
    PyObject *send;     /* the server's send ("_send") */
    PyObject *status;   /* int, 0 until the response starts */
    PyObject *headers;  /* the response's header list, when a row reads it; else None */
    PyObject *error;
    PyObject *recorder; /* record="redirects": its note_redirect(exchange, headers) */
    double started_at;
    double ended_at;
    Py_ssize_t body_size;
    char complete;
} Exchange;

static PyObject *portable_fallback;   /* rows.to_portable_python */
static PyObject *route_fallback;      /* rows.route_reference */
static PyObject *S_TYPE, *S_BODY, *S_MORE_BODY, *S_STATUS, *S_HEADERS, *S_START, *S_BODY_KIND;
static PyObject *S_NOTE_REDIRECT, *S_LOWER, *S_GET, *S_ROUTE, *S_PATH, *S_ROOT_PATH;
static PyObject *S_PATH_TEMPLATE, *S_NAME, *B_EMPTY, *B_LOCATION, *EMPTY_TUPLE, *ZERO;
static PyObject *SCOPE_KEYS[9];

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* as time.time(): nanoseconds as a double, divided */
    return (double)((long long)ts.tv_sec * 1000000000LL + ts.tv_nsec) / 1e9;
}

/* message[key] (KeyError when missing), a new reference */
static PyObject *
item_of(PyObject *message, PyObject *key)
{
    if (PyDict_CheckExact(message)) {
        PyObject *v = PyDict_GetItemWithError(message, key);
        if (v == NULL) {
            if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, key);
            return NULL;
        }
        Py_INCREF(v);
        return v;
    }
    return PyObject_GetItem(message, key);
}

/* message.get(key, default), a new reference */
static PyObject *
get_of(PyObject *message, PyObject *key, PyObject *deflt)
{
    if (PyDict_CheckExact(message)) {
        PyObject *v = PyDict_GetItemWithError(message, key);
        if (v == NULL) {
            if (PyErr_Occurred()) return NULL;
            v = deflt;
        }
        Py_INCREF(v);
        return v;
    }
    return PyObject_CallMethodObjArgs(message, S_GET, key, deflt, NULL);
}

/* len(name) == 8 and name.lower() == b"location" */
static int
is_location(PyObject *name)
{
    if (PyBytes_CheckExact(name)) {
        if (PyBytes_GET_SIZE(name) != 8) return 0;
        const char *s = PyBytes_AS_STRING(name);
        for (int i = 0; i < 8; i++) {
            char c = s[i];
            if (c >= 'A' && c <= 'Z') c += 32;
            if (c != "location"[i]) return 0;
        }
        return 1;
    }
    Py_ssize_t n = PyObject_Size(name);
    if (n < 0) return -1;
    if (n != 8) return 0;
    PyObject *lower = PyObject_CallMethodNoArgs(name, S_LOWER);
    if (lower == NULL) return -1;
    int same = PyObject_RichCompareBool(lower, B_LOCATION, Py_EQ);
    Py_DECREF(lower);
    return same;
}

/* 300 <= status < 400 */
static int
is_redirect(PyObject *status)
{
    if (PyLong_CheckExact(status)) {
        int overflow;
        long v = PyLong_AsLongAndOverflow(status, &overflow);
        if (v == -1 && PyErr_Occurred()) return -1;
        return !overflow && v >= 300 && v < 400;
    }
    PyObject *low = PyLong_FromLong(300), *high = PyLong_FromLong(400);
    int result = -1;
    if (low != NULL && high != NULL) {
        result = PyObject_RichCompareBool(low, status, Py_LE);
        if (result == 1) result = PyObject_RichCompareBool(status, high, Py_LT);
    }
    Py_XDECREF(low);
    Py_XDECREF(high);
    return result;
}

static int
response_start(Exchange *self, PyObject **message)
{
    PyObject *status = item_of(*message, S_STATUS);
    if (status == NULL) return -1;
    Py_XSETREF(self->status, status);
    PyObject *headers = get_of(*message, S_HEADERS, EMPTY_TUPLE);
    if (headers == NULL) return -1;
    if (!PyList_CheckExact(headers)) { /* an iterator would be consumed by the server */
        PyObject *list = PySequence_List(headers);
        Py_DECREF(headers);
        if (list == NULL) return -1;
        headers = list;
        PyObject *copy = PyDict_New();
        if (copy == NULL || PyDict_Update(copy, *message) < 0 ||
            PyDict_SetItem(copy, S_HEADERS, headers) < 0) {
            Py_XDECREF(copy);
            Py_DECREF(headers);
            return -1;
        }
        Py_DECREF(*message);
        *message = copy;
    }
    int redirect = is_redirect(status);
    if (redirect < 0) goto fail;
    if (redirect) {
        Py_INCREF(headers);
        Py_XSETREF(self->headers, headers);
        if (self->recorder != Py_None) {
            PyObject *r = PyObject_CallMethodObjArgs(self->recorder, S_NOTE_REDIRECT,
                                                     (PyObject *)self, headers, NULL);
            if (r == NULL) goto fail;
            Py_DECREF(r);
        }
    }
    else {
        /* Of a response that is no redirect the row reads only a Location. */
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers); i++) {
            PyObject *pair = PyList_GET_ITEM(headers, i);
            PyObject *name;
            if (PyTuple_CheckExact(pair) && PyTuple_GET_SIZE(pair) == 2) {
                name = PyTuple_GET_ITEM(pair, 0);
                Py_INCREF(name);
            }
            else {
                PyObject *seq = PySequence_Tuple(pair);
                if (seq == NULL) goto fail;
                if (PyTuple_GET_SIZE(seq) != 2) {
                    PyErr_Format(PyExc_ValueError, "a header is not a (name, value) pair");
                    Py_DECREF(seq);
                    goto fail;
                }
                name = PyTuple_GET_ITEM(seq, 0);
                Py_INCREF(name);
                Py_DECREF(seq);
            }
            int found = is_location(name);
            Py_DECREF(name);
            if (found < 0) goto fail;
            if (found) {
                Py_INCREF(headers);
                Py_XSETREF(self->headers, headers);
                break;
            }
        }
    }
    Py_DECREF(headers);
    return 0;
fail:
    Py_DECREF(headers);
    return -1;
}

static PyObject *
Exchange_send(Exchange *self, PyObject *message)
{
    PyObject *kind = item_of(message, S_TYPE);
    if (kind == NULL) return NULL;
    Py_INCREF(message);
    int is_body = PyUnicode_Check(kind) && PyUnicode_Compare(kind, S_BODY_KIND) == 0;
    int is_start = !is_body && PyUnicode_Check(kind) && PyUnicode_Compare(kind, S_START) == 0;
    if (PyErr_Occurred()) goto fail;
    if (is_body) {
        PyObject *body = get_of(message, S_BODY, B_EMPTY);
        if (body == NULL) goto fail;
        Py_ssize_t n = PyObject_Size(body);
        Py_DECREF(body);
        if (n < 0) goto fail;
        self->body_size += n;
        PyObject *more = get_of(message, S_MORE_BODY, Py_False);
        if (more == NULL) goto fail;
        int more_true = PyObject_IsTrue(more);
        Py_DECREF(more);
        if (more_true < 0) goto fail;
        if (!more_true) {
            self->ended_at = now();
            self->complete = 1;
        }
    }
    else if (is_start) {
        if (response_start(self, &message) < 0) goto fail;
    }
    Py_DECREF(kind);
    PyObject *awaitable = PyObject_CallOneArg(self->send, message);
    Py_DECREF(message);
    return awaitable;
fail:
    Py_DECREF(kind);
    Py_DECREF(message);
    return NULL;
}

static PyObject *
Exchange_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"scope", "send", "started_at", "recorder", NULL};
    PyObject *scope, *send, *recorder = Py_None;
    double started_at;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOd|O:Exchange", kwlist, &scope, &send,
                                     &started_at, &recorder))
        return NULL;
    Exchange *self = (Exchange *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    Py_INCREF(scope);
    self->scope = scope;
    Py_INCREF(send);
    self->send = send;
    Py_INCREF(ZERO);
    self->status = ZERO;
    Py_INCREF(Py_None);
    self->headers = Py_None;
    Py_INCREF(Py_None);
    self->error = Py_None;
    Py_INCREF(recorder);
    self->recorder = recorder;
    self->started_at = started_at;
    return (PyObject *)self;
}

static int
Exchange_traverse(Exchange *self, visitproc visit, void *arg)
{
    Py_VISIT(self->scope);
    Py_VISIT(self->send);
    Py_VISIT(self->status);
    Py_VISIT(self->headers);
    Py_VISIT(self->error);
    Py_VISIT(self->recorder);
    return 0;
}

static int
Exchange_clear(Exchange *self)
{
    Py_CLEAR(self->scope);
    Py_CLEAR(self->send);
    Py_CLEAR(self->status);
    Py_CLEAR(self->headers);
    Py_CLEAR(self->error);
    Py_CLEAR(self->recorder);
    return 0;
}

static void
Exchange_dealloc(Exchange *self)
{
    PyObject_GC_UnTrack(self);
    Exchange_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Exchange_methods[] = {
    {"send", (PyCFunction)Exchange_send, METH_O,
     "The server's send, wrapped: reads what the row needs, returns send(message)."},
    {NULL}};

static PyMemberDef Exchange_members[] = {
    {"scope", T_OBJECT_EX, offsetof(Exchange, scope), READONLY, NULL},
    {"_send", T_OBJECT_EX, offsetof(Exchange, send), 0, NULL},
    {"status", T_OBJECT_EX, offsetof(Exchange, status), 0, NULL},
    {"headers", T_OBJECT, offsetof(Exchange, headers), 0, NULL},
    {"error", T_OBJECT, offsetof(Exchange, error), 0, NULL},
    {"recorder", T_OBJECT, offsetof(Exchange, recorder), 0, NULL},
    {"started_at", T_DOUBLE, offsetof(Exchange, started_at), 0, NULL},
    {"ended_at", T_DOUBLE, offsetof(Exchange, ended_at), 0, NULL},
    {"body_size", T_PYSSIZET, offsetof(Exchange, body_size), 0, NULL},
    {"complete", T_BOOL, offsetof(Exchange, complete), 0, NULL},
    {NULL}};

static PyTypeObject ExchangeType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "auditor.record._capture_c.Exchange",
    .tp_doc = "Per-request capture (middleware.Exchange); its send wraps the server's.",
    .tp_basicsize = sizeof(Exchange),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Exchange_new,
    .tp_dealloc = (destructor)Exchange_dealloc,
    .tp_traverse = (traverseproc)Exchange_traverse,
    .tp_clear = (inquiry)Exchange_clear,
    .tp_methods = Exchange_methods,
    .tp_members = Exchange_members,
};

/* rows.route_reference(scope) where it is plain, else the Python one's answer */
static PyObject *
route_reference(PyObject *scope)
{
    PyObject *route = PyDict_GetItemWithError(scope, S_ROUTE);
    if (route == NULL && PyErr_Occurred()) return NULL;
    if (route != NULL && route != Py_None) {
        PyObject *template = PyObject_GetAttr(route, S_PATH);
        if (template == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError)) return NULL;
            PyErr_Clear();
        }
        else if (PyUnicode_Check(template)) {
            PyObject *root = PyDict_GetItemWithError(scope, S_ROOT_PATH);
            if (root == NULL && PyErr_Occurred()) {
                Py_DECREF(template);
                return NULL;
            }
            int mounted = root == NULL ? 0 : PyObject_IsTrue(root);
            if (mounted < 0) {
                Py_DECREF(template);
                return NULL;
            }
            if (!mounted) return template;
            Py_DECREF(template);
            return PyObject_CallOneArg(route_fallback, scope);
        }
        else Py_DECREF(template);
    }
    PyObject *litestar = PyDict_GetItemWithError(scope, S_PATH_TEMPLATE);
    if (litestar == NULL && PyErr_Occurred()) return NULL;
    if (litestar != NULL && PyUnicode_Check(litestar) && PyUnicode_GET_LENGTH(litestar)) {
        Py_INCREF(litestar);
        return litestar;
    }
    Py_RETURN_NONE;
}

static PyObject *
to_portable(PyObject *module, PyObject *exchange)
{
    if (portable_fallback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_capture_c.configure() was not called");
        return NULL;
    }
    if (Py_TYPE(exchange) != &ExchangeType)
        return PyObject_CallOneArg(portable_fallback, exchange);
    Exchange *self = (Exchange *)exchange;
    PyObject *scope = self->scope;
    if (!PyDict_CheckExact(scope) || (self->headers != Py_None && !PyList_CheckExact(self->headers)))
        return PyObject_CallOneArg(portable_fallback, exchange);
    /* Everything that may run Python code first; the scope's values are then taken
     * with references of their own. */
    PyObject *item = NULL, *error_name = NULL, *started = NULL, *ended = NULL, *body_size = NULL;
    PyObject *route = route_reference(scope);
    if (route == NULL) return NULL;
    if (self->error != Py_None) {
        error_name = PyObject_GetAttr((PyObject *)Py_TYPE(self->error), S_NAME);
        if (error_name == NULL) goto done;
    }
    else {
        Py_INCREF(Py_None);
        error_name = Py_None;
    }
    started = PyFloat_FromDouble(self->started_at);
    ended = PyFloat_FromDouble(self->ended_at);
    body_size = PyLong_FromSsize_t(self->body_size);
    if (started == NULL || ended == NULL || body_size == NULL) goto done;
    item = PyTuple_New(17);
    if (item == NULL) goto done;
    for (int i = 0; i < 9; i++) {
        PyObject *value = PyDict_GetItemWithError(scope, SCOPE_KEYS[i]);
        if (value == NULL) {
            Py_CLEAR(item);
            if (!PyErr_Occurred()) /* a server that leaves keys out: the Python path */
                item = PyObject_CallOneArg(portable_fallback, exchange);
            goto done;
        }
        Py_INCREF(value);
        PyTuple_SET_ITEM(item, i, value);
    }
    PyObject *rest[] = {route, started, ended, self->status, self->headers, body_size,
                        self->complete ? Py_True : Py_False, error_name};
    for (int i = 0; i < 8; i++) {
        Py_INCREF(rest[i]);
        PyTuple_SET_ITEM(item, 9 + i, rest[i]);
    }
done:
    Py_DECREF(route);
    Py_XDECREF(error_name);
    Py_XDECREF(started);
    Py_XDECREF(ended);
    Py_XDECREF(body_size);
    return item;
}

/* Writer.submit in C: the queue's bound check, to_portable, the ledger's counter, the
 * append, and the writer's batch call every ``wake_at`` captures. */
typedef struct {
    PyObject_HEAD
    PyObject *queue;    /* the writer's deque */
    PyObject *append;   /* its append */
    PyObject *on_batch; /* Writer._encode_now */
    Py_buffer counter;  /* the ledger's QUEUED word, while has_counter */
    int has_counter;
    Py_ssize_t limit;
    Py_ssize_t wake_at;
    Py_ssize_t dropped_queue_full;
    Py_ssize_t dropped_unreadable;
} Submitter;

static PyObject *to_portable(PyObject *module, PyObject *exchange);

static PyObject *
Submitter_submit(Submitter *self, PyObject *exchange)
{
    Py_ssize_t waiting = PyObject_Size(self->queue);
    if (waiting < 0) return NULL;
    if (waiting >= self->limit) {
        self->dropped_queue_full++;
        Py_RETURN_NONE;
    }
    PyObject *item = to_portable(NULL, exchange);
    if (item == NULL) { /* never into the app: counted ("other") with the next batch */
        PyErr_Clear();
        self->dropped_unreadable++;
        Py_RETURN_NONE;
    }
    if (self->has_counter) /* before the append: a kill in between over-counts */
        ((unsigned long long *)self->counter.buf)[0] += 1;
    PyObject *r = PyObject_CallOneArg(self->append, item);
    Py_DECREF(item);
    if (r == NULL) return NULL;
    Py_DECREF(r);
    if (waiting % self->wake_at == self->wake_at - 1) return PyObject_CallNoArgs(self->on_batch);
    Py_RETURN_NONE;
}

static PyObject *
Submitter_release(Submitter *self, PyObject *unused)
{
    if (self->has_counter) {
        self->has_counter = 0;
        PyBuffer_Release(&self->counter);
    }
    Py_RETURN_NONE;
}

static int
Submitter_init(Submitter *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"queue", "limit", "counter", "wake_at", "on_batch", NULL};
    PyObject *queue, *counter, *on_batch;
    Py_ssize_t limit, wake_at;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OnOnO:Submitter", kwlist, &queue, &limit,
                                     &counter, &wake_at, &on_batch))
        return -1;
    if (wake_at < 1) {
        PyErr_SetString(PyExc_ValueError, "wake_at must be at least 1");
        return -1;
    }
    PyObject *append = PyObject_GetAttrString(queue, "append");
    if (append == NULL) return -1;
    Submitter_release(self, NULL);
    if (counter != Py_None) {
        if (PyObject_GetBuffer(counter, &self->counter, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
            Py_DECREF(append);
            return -1;
        }
        if (self->counter.len < (Py_ssize_t)sizeof(unsigned long long)) {
            PyBuffer_Release(&self->counter);
            Py_DECREF(append);
            PyErr_SetString(PyExc_ValueError, "the counter holds no 8-byte word");
            return -1;
        }
        self->has_counter = 1;
    }
    Py_INCREF(queue);
    Py_XSETREF(self->queue, queue);
    Py_XSETREF(self->append, append);
    Py_INCREF(on_batch);
    Py_XSETREF(self->on_batch, on_batch);
    self->limit = limit;
    self->wake_at = wake_at;
    return 0;
}

static int
Submitter_traverse(Submitter *self, visitproc visit, void *arg)
{
    Py_VISIT(self->queue);
    Py_VISIT(self->append);
    Py_VISIT(self->on_batch);
    if (self->has_counter) Py_VISIT(self->counter.obj);
    return 0;
}

static int
Submitter_clear(Submitter *self)
{
    Submitter_release(self, NULL);
    Py_CLEAR(self->queue);
    Py_CLEAR(self->append);
    Py_CLEAR(self->on_batch);
    return 0;
}

static void
Submitter_dealloc(Submitter *self)
{
    PyObject_GC_UnTrack(self);
    Submitter_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Submitter_methods[] = {
    {"submit", (PyCFunction)Submitter_submit, METH_O,
     "Writer.submit: queue the capture's portable tuple, or count the drop."},
    {"release", (PyCFunction)Submitter_release, METH_NOARGS,
     "Let go of the ledger's counter (before the ledger closes); later captures go uncounted."},
    {NULL}};

static PyMemberDef Submitter_members[] = {
    {"dropped_queue_full", T_PYSSIZET, offsetof(Submitter, dropped_queue_full), READONLY, NULL},
    {"dropped_unreadable", T_PYSSIZET, offsetof(Submitter, dropped_unreadable), READONLY, NULL},
    {NULL}};

static PyTypeObject SubmitterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "auditor.record._capture_c.Submitter",
    .tp_doc = "Writer.submit in C, over the writer's deque and the ledger's counter.",
    .tp_basicsize = sizeof(Submitter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Submitter_init,
    .tp_dealloc = (destructor)Submitter_dealloc,
    .tp_traverse = (traverseproc)Submitter_traverse,
    .tp_clear = (inquiry)Submitter_clear,
    .tp_methods = Submitter_methods,
    .tp_members = Submitter_members,
};

/* record="redirects": Watch is middleware.Watch -- a request not known to be needed,
 * whose send passes the server's messages through and reads only the status; a 3xx
 * makes it a capture (recorder.make_exchange) from the response start on. */
typedef struct {
    PyObject_HEAD
    PyObject *scope;
    PyObject *send;
    PyObject *recorder;
    PyObject *exchange; /* None until a 3xx */
    double started_at;
} Watch;

static PyObject *S_MAKE_EXCHANGE, *S_SEND;

static PyObject *
Watch_send(Watch *self, PyObject *message)
{
    if (self->exchange != Py_None) {
        if (Py_TYPE(self->exchange) == &ExchangeType)
            return Exchange_send((Exchange *)self->exchange, message);
        return PyObject_CallMethodOneArg(self->exchange, S_SEND, message);
    }
    PyObject *kind = item_of(message, S_TYPE);
    if (kind == NULL) return NULL;
    int is_start = PyObject_RichCompareBool(kind, S_START, Py_EQ);
    Py_DECREF(kind);
    if (is_start < 0) return NULL;
    if (is_start) {
        PyObject *status = item_of(message, S_STATUS);
        if (status == NULL) return NULL;
        int redirect = is_redirect(status);
        Py_DECREF(status);
        if (redirect < 0) return NULL;
        if (redirect) {
            PyObject *started = PyFloat_FromDouble(self->started_at);
            if (started == NULL) return NULL;
            PyObject *exchange = PyObject_CallMethodObjArgs(
                self->recorder, S_MAKE_EXCHANGE, self->scope, self->send, started,
                self->recorder, NULL);
            Py_DECREF(started);
            if (exchange == NULL) return NULL;
            Py_XSETREF(self->exchange, exchange);
            return Watch_send(self, message);
        }
    }
    return PyObject_CallOneArg(self->send, message);
}

static PyObject *
Watch_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"scope", "send", "started_at", "recorder", NULL};
    PyObject *scope, *send, *recorder;
    double started_at;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOdO:Watch", kwlist, &scope, &send,
                                     &started_at, &recorder))
        return NULL;
    Watch *self = (Watch *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    Py_INCREF(scope);
    self->scope = scope;
    Py_INCREF(send);
    self->send = send;
    Py_INCREF(recorder);
    self->recorder = recorder;
    Py_INCREF(Py_None);
    self->exchange = Py_None;
    self->started_at = started_at;
    return (PyObject *)self;
}

static int
Watch_traverse(Watch *self, visitproc visit, void *arg)
{
    Py_VISIT(self->scope);
    Py_VISIT(self->send);
    Py_VISIT(self->recorder);
    Py_VISIT(self->exchange);
    return 0;
}

static int
Watch_clear(Watch *self)
{
    Py_CLEAR(self->scope);
    Py_CLEAR(self->send);
    Py_CLEAR(self->recorder);
    Py_CLEAR(self->exchange);
    return 0;
}

static void
Watch_dealloc(Watch *self)
{
    PyObject_GC_UnTrack(self);
    Watch_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Watch_methods[] = {
    {"send", (PyCFunction)Watch_send, METH_O,
     "The server's send, watched for a 3xx status."},
    {NULL}};

static PyMemberDef Watch_members[] = {
    {"scope", T_OBJECT_EX, offsetof(Watch, scope), READONLY, NULL},
    {"exchange", T_OBJECT, offsetof(Watch, exchange), READONLY, NULL},
    {"started_at", T_DOUBLE, offsetof(Watch, started_at), READONLY, NULL},
    {NULL}};

static PyTypeObject WatchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "auditor.record._capture_c.Watch",
    .tp_doc = "record=\"redirects\": a request watched for a 3xx (middleware.Watch).",
    .tp_basicsize = sizeof(Watch),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Watch_new,
    .tp_dealloc = (destructor)Watch_dealloc,
    .tp_traverse = (traverseproc)Watch_traverse,
    .tp_clear = (inquiry)Watch_clear,
    .tp_methods = Watch_methods,
    .tp_members = Watch_members,
};

static PyObject *
configure(PyObject *module, PyObject *args)
{
    PyObject *portable, *route;
    if (!PyArg_ParseTuple(args, "OO:configure", &portable, &route)) return NULL;
    Py_INCREF(portable);
    Py_XSETREF(portable_fallback, portable);
    Py_INCREF(route);
    Py_XSETREF(route_fallback, route);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"to_portable", (PyCFunction)to_portable, METH_O,
     "rows.to_portable's tuple of a capture (its Python function for any other)."},
    {"configure", (PyCFunction)configure, METH_VARARGS,
     "configure(to_portable_python, route_reference): the Python paths handed on to."},
    {NULL}};

static struct PyModuleDef capture_c_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "auditor.record._capture_c",
    .m_doc = "The C fast path of the recorder's per-request capture (optional).",
    .m_size = -1,
    .m_methods = module_methods,
};

#define INTERN(var, text) \
    if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL

PyMODINIT_FUNC
PyInit__capture_c(void)
{
    INTERN(S_TYPE, "type");
    INTERN(S_BODY, "body");
    INTERN(S_MORE_BODY, "more_body");
    INTERN(S_STATUS, "status");
    INTERN(S_HEADERS, "headers");
    INTERN(S_START, "http.response.start");
    INTERN(S_BODY_KIND, "http.response.body");
    INTERN(S_NOTE_REDIRECT, "note_redirect");
    INTERN(S_LOWER, "lower");
    INTERN(S_GET, "get");
    INTERN(S_ROUTE, "route");
    INTERN(S_PATH, "path");
    INTERN(S_ROOT_PATH, "root_path");
    INTERN(S_PATH_TEMPLATE, "path_template");
    INTERN(S_NAME, "__name__");
    static const char *keys[9] = {"method", "scheme", "server", "client", "path",
                                  "raw_path", "query_string", "headers", "http_version"};
    for (int i = 0; i < 9; i++) INTERN(SCOPE_KEYS[i], keys[i]);
    if ((B_EMPTY = PyBytes_FromStringAndSize("", 0)) == NULL) return NULL;
    if ((B_LOCATION = PyBytes_FromString("location")) == NULL) return NULL;
    if ((EMPTY_TUPLE = PyTuple_New(0)) == NULL) return NULL;
    if ((ZERO = PyLong_FromLong(0)) == NULL) return NULL;
    INTERN(S_MAKE_EXCHANGE, "make_exchange");
    INTERN(S_SEND, "send");
    if (PyType_Ready(&ExchangeType) < 0 || PyType_Ready(&SubmitterType) < 0 ||
        PyType_Ready(&WatchType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&capture_c_module);
    if (module == NULL) return NULL;
    Py_INCREF(&ExchangeType);
    if (PyModule_AddObject(module, "Exchange", (PyObject *)&ExchangeType) < 0) {
        Py_DECREF(&ExchangeType);
        Py_DECREF(module);
        return NULL;
    }
    PyTypeObject *types[] = {&SubmitterType, &WatchType};
    const char *names[] = {"Submitter", "Watch"};
    for (int i = 0; i < 2; i++) {
        Py_INCREF(types[i]);
        if (PyModule_AddObject(module, names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(types[i]);
            Py_DECREF(module);
            return NULL;
        }
    }
    return module;
}
