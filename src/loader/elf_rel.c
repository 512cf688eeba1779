/* elf_rel.c - relocatable ELF loader (see elf_rel.h). */
#include "loader/elf_rel.h"

#include <elf.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE 4096ULL
#define MAX_SECTIONS 4096
#define MISSING_LIST 512

struct obj {
	const uint8_t *elf;
	size_t len;
	const Elf64_Ehdr *eh;
	const Elf64_Shdr *sh;
	uint64_t *sec_off; /* offset of each allocated section in the image, or UINT64_MAX */
};

static bool range_ok(size_t len, uint64_t off, uint64_t size)
{
	return off <= len && size <= len - off;
}

static int check_headers(struct obj *o, struct vmsh_err *err)
{
	if (o->len < sizeof(Elf64_Ehdr) || memcmp(o->elf, ELFMAG, SELFMAG))
		return vmsh_error(err, ENOEXEC, "library: not an ELF file");
	o->eh = (const Elf64_Ehdr *)o->elf;
	const Elf64_Ehdr *eh = o->eh;
	if (eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_ident[EI_DATA] != ELFDATA2LSB || eh->e_machine != EM_X86_64)
		return vmsh_error(err, ENOEXEC, "library: not a little-endian x86-64 ELF64 object");
	if (eh->e_type != ET_REL)
		return vmsh_error(err, ENOEXEC, "library: not a relocatable object (e_type %u)", eh->e_type);
	if (eh->e_shentsize != sizeof(Elf64_Shdr) || eh->e_shnum == 0 || eh->e_shnum > MAX_SECTIONS ||
	    !range_ok(o->len, eh->e_shoff, (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr)) || eh->e_shoff % 8)
		return vmsh_error(err, ENOEXEC, "library: bad section header table");
	o->sh = (const Elf64_Shdr *)(o->elf + eh->e_shoff);
	for (unsigned i = 0; i < eh->e_shnum; i++) {
		const Elf64_Shdr *s = &o->sh[i];
		if (s->sh_type != SHT_NOBITS && s->sh_type != SHT_NULL && !range_ok(o->len, s->sh_offset, s->sh_size))
			return vmsh_error(err, ENOEXEC, "library: section %u lies outside the file", i);
		if ((s->sh_type == SHT_RELA || s->sh_type == SHT_SYMTAB) && s->sh_offset % 8)
			return vmsh_error(err, ENOEXEC, "library: section %u misaligned", i);
		if (s->sh_addralign > PAGE)
			return vmsh_error(err, ENOEXEC, "library: section %u alignment %llu too large", i,
					  (unsigned long long)s->sh_addralign);
	}
	return 0;
}

/* Place allocated sections: pass 0 the non-writable ones, pass 1 the writable. */
static int layout(struct obj *o, struct loaded_lib *lib, struct vmsh_err *err)
{
	o->sec_off = malloc(o->eh->e_shnum * sizeof(*o->sec_off));
	if (!o->sec_off)
		return vmsh_error(err, ENOMEM, "library layout");
	uint64_t off = 0;
	for (int pass = 0; pass < 2; pass++) {
		if (pass == 1) {
			off = (off + PAGE - 1) & ~(PAGE - 1);
			lib->rx_size = off;
		}
		for (unsigned i = 0; i < o->eh->e_shnum; i++) {
			const Elf64_Shdr *s = &o->sh[i];
			if (pass == 0)
				o->sec_off[i] = UINT64_MAX;
			/* SHT_NULL has no contents (check_headers does not range-check
			 * it): never placed, whatever its flags say */
			if (s->sh_type == SHT_NULL || !(s->sh_flags & SHF_ALLOC) || !!(s->sh_flags & SHF_WRITE) != pass)
				continue;
			uint64_t align = s->sh_addralign ? s->sh_addralign : 1;
			if (align & (align - 1))
				return vmsh_error(err, ENOEXEC, "library: section %u alignment not a power of two", i);
			off = (off + align - 1) & ~(align - 1);
			o->sec_off[i] = off;
			if (s->sh_size > (64u << 20) || off + s->sh_size > (64u << 20))
				return vmsh_error(err, EFBIG, "library: larger than 64 MiB");
			off += s->sh_size;
		}
	}
	lib->size = (off + PAGE - 1) & ~(PAGE - 1);
	if (lib->size == 0)
		return vmsh_error(err, ENOEXEC, "library: no allocated sections");
	lib->image = calloc(1, lib->size);
	if (!lib->image)
		return vmsh_error(err, ENOMEM, "library image");
	for (unsigned i = 0; i < o->eh->e_shnum; i++)
		if (o->sec_off[i] != UINT64_MAX && o->sh[i].sh_type != SHT_NOBITS)
			memcpy(lib->image + o->sec_off[i], o->elf + o->sh[i].sh_offset, o->sh[i].sh_size);
	return 0;
}

struct symtab {
	const Elf64_Sym *syms;
	size_t n;
	const char *str;
	size_t str_len;
};

static int get_symtab(const struct obj *o, unsigned idx, struct symtab *st, struct vmsh_err *err)
{
	if (idx >= o->eh->e_shnum || o->sh[idx].sh_type != SHT_SYMTAB || o->sh[idx].sh_entsize != sizeof(Elf64_Sym))
		return vmsh_error(err, ENOEXEC, "library: bad symbol table reference %u", idx);
	unsigned stridx = o->sh[idx].sh_link;
	if (stridx >= o->eh->e_shnum || o->sh[stridx].sh_type != SHT_STRTAB || o->sh[stridx].sh_size == 0)
		return vmsh_error(err, ENOEXEC, "library: bad string table");
	st->syms = (const Elf64_Sym *)(o->elf + o->sh[idx].sh_offset);
	st->n = o->sh[idx].sh_size / sizeof(Elf64_Sym);
	st->str = (const char *)(o->elf + o->sh[stridx].sh_offset);
	st->str_len = o->sh[stridx].sh_size;
	if (st->str[st->str_len - 1] != '\0')
		return vmsh_error(err, ENOEXEC, "library: string table not terminated");
	return 0;
}

static const char *sym_name(const struct symtab *st, const Elf64_Sym *s)
{
	return s->st_name < st->str_len ? st->str + s->st_name : "?";
}

/* Value of symbol i; undefined ones through the resolver (missing ones are
 * collected in `missing` for one complete error message). */
static int sym_value(const struct obj *o, const struct loaded_lib *lib, const struct symtab *st, size_t i,
		     elf_rel_resolve_fn resolve, void *opaque, uint64_t *v, char *missing, struct vmsh_err *err)
{
	if (i >= st->n)
		return vmsh_error(err, ENOEXEC, "library: relocation names symbol %zu of %zu", i, st->n);
	const Elf64_Sym *s = &st->syms[i];
	if (s->st_shndx == SHN_UNDEF) {
		const char *name = sym_name(st, s);
		if (resolve(opaque, name, v) == 0)
			return 0;
		if (ELF64_ST_BIND(s->st_info) == STB_WEAK) {
			*v = 0; /* the library checks for it */
			return 0;
		}
		if (!strstr(missing, name) && strlen(missing) + strlen(name) + 3 < MISSING_LIST) {
			if (missing[0])
				strcat(missing, ", ");
			strcat(missing, name);
		}
		*v = 0;
		return 1;
	}
	if (s->st_shndx == SHN_ABS) {
		*v = s->st_value;
		return 0;
	}
	if (s->st_shndx >= o->eh->e_shnum || o->sec_off[s->st_shndx] == UINT64_MAX)
		return vmsh_error(err, ENOEXEC, "library: symbol '%s' in a section that is not loaded", sym_name(st, s));
	*v = lib->base + o->sec_off[s->st_shndx] + s->st_value;
	return 0;
}

static int apply_rela(const struct obj *o, struct loaded_lib *lib, unsigned ri, elf_rel_resolve_fn resolve,
		      void *opaque, char *missing, struct vmsh_err *err)
{
	const Elf64_Shdr *rs = &o->sh[ri];
	unsigned target = rs->sh_info;
	if (target >= o->eh->e_shnum || rs->sh_entsize != sizeof(Elf64_Rela))
		return vmsh_error(err, ENOEXEC, "library: bad relocation section %u", ri);
	if (o->sec_off[target] == UINT64_MAX)
		return 0; /* relocations for a section we do not load (debug info) */
	struct symtab st;
	if (get_symtab(o, rs->sh_link, &st, err) < 0)
		return -1;
	const Elf64_Rela *r = (const Elf64_Rela *)(o->elf + rs->sh_offset);
	size_t n = rs->sh_size / sizeof(Elf64_Rela);
	uint64_t tsize = o->sh[target].sh_size;
	for (size_t k = 0; k < n; k++) {
		uint32_t type = ELF64_R_TYPE(r[k].r_info);
		uint64_t S;
		int rc = sym_value(o, lib, &st, ELF64_R_SYM(r[k].r_info), resolve, opaque, &S, missing, err);
		if (rc < 0)
			return -1;
		if (rc > 0)
			continue; /* missing import: reported after all are known */
		uint64_t A = (uint64_t)r[k].r_addend;
		uint64_t off = r[k].r_offset;
		unsigned width = type == R_X86_64_64 ? 8 : 4;
		if (type == R_X86_64_NONE)
			continue;
		if (off > tsize || width > tsize - off)
			return vmsh_error(err, ENOEXEC, "library: relocation %zu outside its section", k);
		uint8_t *where = lib->image + o->sec_off[target] + off;
		uint64_t P = lib->base + o->sec_off[target] + off;
		int64_t val;
		switch (type) {
		case R_X86_64_64:
			val = (int64_t)(S + A);
			memcpy(where, &val, 8);
			break;
		case R_X86_64_PC32:
		case R_X86_64_PLT32:
			val = (int64_t)(S + A - P);
			if (val != (int32_t)val)
				return vmsh_error(err, ERANGE,
						  "library: target %#llx out of 32-bit reach of %#llx (build with -mcmodel=large)",
						  (unsigned long long)S, (unsigned long long)P);
			memcpy(where, &(int32_t){ (int32_t)val }, 4);
			break;
		case R_X86_64_32S:
			val = (int64_t)(S + A);
			if (val != (int32_t)val)
				return vmsh_error(err, ERANGE, "library: %#llx does not fit a sign-extended 32-bit field",
						  (unsigned long long)val);
			memcpy(where, &(int32_t){ (int32_t)val }, 4);
			break;
		case R_X86_64_32:
			if (S + A > UINT32_MAX)
				return vmsh_error(err, ERANGE, "library: %#llx does not fit a 32-bit field",
						  (unsigned long long)(S + A));
			memcpy(where, &(uint32_t){ (uint32_t)(S + A) }, 4);
			break;
		default:
			return vmsh_error(err, ENOEXEC, "library: unsupported relocation type %u", type);
		}
		lib->n_relocs++;
	}
	return 0;
}

static int collect_globals(const struct obj *o, struct loaded_lib *lib, struct vmsh_err *err)
{
	for (unsigned i = 0; i < o->eh->e_shnum; i++) {
		if (o->sh[i].sh_type != SHT_SYMTAB)
			continue;
		struct symtab st;
		if (get_symtab(o, i, &st, err) < 0)
			return -1;
		lib->syms = calloc(st.n ? st.n : 1, sizeof(*lib->syms));
		if (!lib->syms)
			return vmsh_error(err, ENOMEM, "library symbols");
		for (size_t k = 0; k < st.n; k++) {
			const Elf64_Sym *s = &st.syms[k];
			if (ELF64_ST_BIND(s->st_info) != STB_GLOBAL || s->st_shndx == SHN_UNDEF ||
			    s->st_shndx >= o->eh->e_shnum || o->sec_off[s->st_shndx] == UINT64_MAX)
				continue;
			lib->syms[lib->n_syms].name = strdup(sym_name(&st, s));
			lib->syms[lib->n_syms].addr = lib->base + o->sec_off[s->st_shndx] + s->st_value;
			if (!lib->syms[lib->n_syms].name)
				return vmsh_error(err, ENOMEM, "library symbols");
			lib->n_syms++;
		}
		break;
	}
	return 0;
}

int elf_rel_load(const uint8_t *elf, size_t len, uint64_t base, elf_rel_resolve_fn resolve, void *opaque,
		struct loaded_lib *lib, struct vmsh_err *err)
{
	memset(lib, 0, sizeof(*lib));
	lib->base = base;
	struct obj o = { .elf = elf, .len = len };
	char missing[MISSING_LIST] = "";
	int rc = -1;
	if (base & (PAGE - 1)) {
		vmsh_error(err, EINVAL, "library: load address %#llx not page aligned", (unsigned long long)base);
		goto out;
	}
	if (check_headers(&o, err) < 0 || layout(&o, lib, err) < 0)
		goto out;
	for (unsigned i = 0; i < o.eh->e_shnum; i++) {
		if (o.sh[i].sh_type == SHT_REL) {
			vmsh_error(err, ENOEXEC, "library: REL relocations are not used on x86-64");
			goto out;
		}
		if (o.sh[i].sh_type == SHT_RELA && apply_rela(&o, lib, i, resolve, opaque, missing, err) < 0)
			goto out;
	}
	if (missing[0]) {
		vmsh_error(err, ENOENT, "the guest kernel does not export: %s", missing);
		goto out;
	}
	if (collect_globals(&o, lib, err) < 0)
		goto out;
	rc = 0;
out:
	free(o.sec_off);
	if (rc < 0)
		elf_rel_free(lib);
	return rc;
}

int elf_rel_symbol(const struct loaded_lib *lib, const char *name, uint64_t *addr)
{
	for (size_t i = 0; i < lib->n_syms; i++)
		if (!strcmp(lib->syms[i].name, name)) {
			*addr = lib->syms[i].addr;
			return 0;
		}
	return -1;
}

void elf_rel_free(struct loaded_lib *lib)
{
	for (size_t i = 0; i < lib->n_syms; i++)
		free(lib->syms[i].name);
	free(lib->syms);
	free(lib->image);
	memset(lib, 0, sizeof(*lib));
}
