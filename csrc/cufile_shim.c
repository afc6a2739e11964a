/* cufile_shim.c - see cufile_shim.h. Compiled through cufile_cgo.go. */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "cufile_shim.h"
#include "dl.h"

#define F(field, symbol) {NULL, symbol, offsetof(struct megaio_cufile, field)}
static const struct megaio_symbol cufile_entries[] = {
	F(cuFileDriverOpen, "cuFileDriverOpen"),
	F(cuFileDriverGetProperties, "cuFileDriverGetProperties"),
	F(cuFileHandleRegister, "cuFileHandleRegister"),
	F(cuFileHandleDeregister, "cuFileHandleDeregister"),
	F(cuFileBufRegister, "cuFileBufRegister"),
	F(cuFileBufDeregister, "cuFileBufDeregister"),
	F(cuFileBatchIOSetUp, "cuFileBatchIOSetUp"),
	F(cuFileBatchIOSubmit, "cuFileBatchIOSubmit"),
	F(cuFileBatchIOGetStatus, "cuFileBatchIOGetStatus"),
	F(cuFileBatchIOCancel, "cuFileBatchIOCancel"),
	F(cuFileBatchIODestroy, "cuFileBatchIODestroy"),
};

int megaio_cufile_load(struct megaio_cufile *c, const char *libname, char *err, size_t errlen)
{
	memset(c, 0, sizeof(*c));
	if (!(c->lib = megaio_dlopen(libname, err, errlen)))
		return -1;
	if (megaio_load_symbols(&c->lib, c, cufile_entries, sizeof(cufile_entries) / sizeof(cufile_entries[0]), NULL,
				err, errlen))
		return -2;
	return 0;
}

int megaio_gds_submit(struct megaio_cufile *c, void *batch, const struct megaio_gds_io *ios, unsigned n,
		      megaio_CUfileIOParams *params)
{
	for (unsigned i = 0; i < n; i++) {
		megaio_CUfileIOParams *p = &params[i];
		memset(p, 0, sizeof(*p));
		p->mode = MEGAIO_CUFILE_BATCH;
		p->u.batch.devPtr_base = (void *)(uintptr_t)ios[i].dev_base;
		p->u.batch.file_offset = (off_t)ios[i].file_off;
		p->u.batch.devPtr_offset = (off_t)ios[i].dev_off;
		p->u.batch.size = (size_t)ios[i].size;
		p->fh = (void *)(uintptr_t)ios[i].fh;
		p->opcode = ios[i].opcode;
		p->cookie = (void *)(uintptr_t)ios[i].cookie;
	}
	return c->cuFileBatchIOSubmit(batch, n, params, 0).err;
}

int megaio_gds_poll(struct megaio_cufile *c, void *batch, struct megaio_gds_event *out, unsigned max,
		    megaio_CUfileIOEvents *raw)
{
	struct timespec zero = {0, 0};
	unsigned nr = max;
	megaio_CUfileError e = c->cuFileBatchIOGetStatus(batch, 0, &nr, raw, &zero);
	if (e.err != 0)
		return -e.err;
	if (nr > max)
		nr = max;
	for (unsigned i = 0; i < nr; i++) {
		out[i].cookie = (uint64_t)(uintptr_t)raw[i].cookie;
		out[i].ret = (int64_t)raw[i].ret;
		out[i].status = raw[i].status;
		out[i].pad = 0;
	}
	return (int)nr;
}

const char *megaio_cufile_code_name(int code)
{
	switch (code) {
#define MEGAIO_NAME(c, name, kind) \
	case c:                    \
		return #name;
		MEGAIO_CUFILE_CODES(MEGAIO_NAME)
#undef MEGAIO_NAME
	}
	return NULL;
}

int megaio_cufile_code_kind(int code)
{
	switch (code) {
#define MEGAIO_KIND(c, name, kind) \
	case c:                    \
		return kind;
		MEGAIO_CUFILE_CODES(MEGAIO_KIND)
#undef MEGAIO_KIND
	}
	return MEGAIO_CUFILE_PLAIN;
}
