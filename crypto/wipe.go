package crypto

import (
	"reflect"
	"runtime"
	"unsafe"
)

// wipe zeroes the value p points to and reports whether it did. It does so only for
// values that hold no pointers, such as the standard library's AES key schedules and
// GCM hash tables (integers and arrays of them), whose types are not exported: memory
// with pointers in it is never overwritten behind the garbage collector's back. The
// type is checked at run time, so a future layout with pointers is left alone (and
// TestWipeKeySchedules says so) rather than corrupted.
func wipe(p any) bool {
	v := reflect.ValueOf(p)
	if v.Kind() != reflect.Pointer || v.IsNil() || !pointerFree(v.Type().Elem()) {
		return false
	}
	clear(unsafe.Slice((*byte)(v.UnsafePointer()), v.Type().Elem().Size()))
	runtime.KeepAlive(p)
	return true
}

// pointerFree reports whether values of type t hold no pointers.
func pointerFree(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return true
	case reflect.Array:
		return t.Len() == 0 || pointerFree(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if !pointerFree(t.Field(i).Type) {
				return false
			}
		}
		return true
	}
	return false
}
