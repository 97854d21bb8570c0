/* Receive the rows of a binary COPY into a block, without the GIL.
 *
 * pgoutput sends one COPY row per change, and taking each row from Python costs about a
 * microsecond and holds the GIL the decoding threads need. This loop does what _reader._receive
 * does in Python (PQgetCopyData until the block is full, poll while nothing is buffered), one
 * call per block. It does not link libpq: the caller passes the addresses of PQgetCopyData,
 * PQfreemem, PQconsumeInput and PQsocket of the libpq psycopg loaded, so both use one library.
 *
 * receive(conn, getcopy, freemem, consume, socket, buf, used, lengths, nrows, header_done, timeout_ms)
 *   conn .. socket   addresses (int)
 *   buf              writable buffer: rows are appended at buf[used:], each with its 6-byte COPY row header
 *   lengths          writable int64 buffer: each row's length is stored at lengths[nrows:]
 *   header_done      0 until the COPY file header (first row) has been stripped
 * returns (status, used, nrows, header_done, pending)
 *   status 0  block full (no room for another length, or the next row did not fit: it is `pending`, bytes)
 *          1  end of the COPY (the caller reads the command's result)
 *          2  nothing arrived within timeout_ms (call again)
 *         -1  libpq reported an error (the caller reads the result or the connection's error)
 *         -2  the stream does not start with a binary COPY header
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>

typedef int (*getcopy_fn)(void *, char **, int);
typedef void (*freemem_fn)(void *);
typedef int (*consume_fn)(void *);
typedef int (*socket_fn)(const void *);

static const char SIGNATURE[11] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', '\xff', '\r', '\n', '\0'};
#define HEADER_LEN 19 /* signature, int32 flags, int32 header-extension length */

static PyObject *receive(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long conn_a, getcopy_a, freemem_a, consume_a, socket_a;
    Py_buffer buf, lengths;
    Py_ssize_t used, nrows;
    int header_done, timeout_ms;
    if (!PyArg_ParseTuple(args, "KKKKKw*nw*nii", &conn_a, &getcopy_a, &freemem_a, &consume_a, &socket_a, &buf,
                          &used, &lengths, &nrows, &header_done, &timeout_ms))
        return NULL;
    void *conn = (void *)(uintptr_t)conn_a;
    getcopy_fn getcopy = (getcopy_fn)(uintptr_t)getcopy_a;
    freemem_fn freemem = (freemem_fn)(uintptr_t)freemem_a;
    consume_fn consume = (consume_fn)(uintptr_t)consume_a;
    socket_fn sock = (socket_fn)(uintptr_t)socket_a;
    char *out = (char *)buf.buf;
    Py_ssize_t cap = buf.len;
    int64_t *lens = (int64_t *)lengths.buf;
    Py_ssize_t max_rows = lengths.len / (Py_ssize_t)sizeof(int64_t);
    if (conn == NULL || used < 0 || used > cap || nrows < 0 || nrows > max_rows) {
        PyBuffer_Release(&buf);
        PyBuffer_Release(&lengths);
        PyErr_SetString(PyExc_ValueError, "receive: bad connection, offset or row count");
        return NULL;
    }
    int status = 0;
    char *pending = NULL;   /* a row (from libpq) that did not fit */
    char *pending_at = NULL;
    Py_ssize_t pending_len = 0;

    Py_BEGIN_ALLOW_THREADS
    while (nrows < max_rows) {
        char *row = NULL;
        int n = getcopy(conn, &row, 1);
        if (n == 0) { /* nothing complete buffered: wait for the socket, then read what arrived */
            struct pollfd p = {sock(conn), POLLIN, 0};
            int ready = poll(&p, 1, timeout_ms);
            if (ready == 0) { status = 2; break; }
            if (ready < 0 && errno == EINTR) continue;
            if (!consume(conn)) { status = -1; break; }
            continue;
        }
        if (n == -1) { status = 1; break; }
        if (n < 0) { status = -1; break; }
        char *data = row;
        Py_ssize_t len = n;
        if (!header_done) {
            if (len < HEADER_LEN || memcmp(data, SIGNATURE, sizeof SIGNATURE) != 0) {
                freemem(row);
                status = -2;
                break;
            }
            uint32_t ext = ((uint32_t)(uint8_t)data[15] << 24) | ((uint32_t)(uint8_t)data[16] << 16) |
                           ((uint32_t)(uint8_t)data[17] << 8) | (uint32_t)(uint8_t)data[18];
            if ((Py_ssize_t)ext > len - HEADER_LEN) { freemem(row); status = -2; break; }
            data += HEADER_LEN + ext;
            len -= HEADER_LEN + ext;
            header_done = 1;
        }
        if (len <= 2) { /* the trailer (int16 -1), or the header alone */
            freemem(row);
            continue;
        }
        if (len > cap - used) {
            pending = row;
            pending_at = data;
            pending_len = len;
            status = 0;
            break;
        }
        memcpy(out + used, data, (size_t)len);
        used += len;
        lens[nrows++] = len;
        freemem(row);
    }
    Py_END_ALLOW_THREADS

    PyBuffer_Release(&buf);
    PyBuffer_Release(&lengths);
    PyObject *rest;
    if (pending != NULL) {
        rest = PyBytes_FromStringAndSize(pending_at, pending_len);
        freemem(pending);
        if (rest == NULL) return NULL;
    } else {
        rest = Py_NewRef(Py_None);
    }
    return Py_BuildValue("innNN", status, used, nrows, PyBool_FromLong(header_done), rest);
}

static PyMethodDef methods[] = {
    {"receive", receive, METH_VARARGS, "Append binary COPY rows to a block without the GIL (see the file's comment)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_copyrecv", NULL, -1, methods};

PyMODINIT_FUNC PyInit__copyrecv(void) { return PyModule_Create(&module); }
