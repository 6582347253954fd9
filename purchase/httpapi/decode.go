package httpapi

import (
	"fmt"
	"slices"
	"strconv"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"github.com/flux-order/flux-order/purchase/sale"
)

// The purchase body is one JSON object with one string member, "buyerId".
// decodePurchase reads it with a small strict parser rather than
// encoding/json, which accepts what a ticket sale must not: duplicate keys
// (the last wins), field names in any case ("BUYERID"), and invalid UTF-8
// or lone surrogates (silently replaced by U+FFFD). What it accepts,
// encoding/json decodes to the same value (FuzzDecodePurchase checks it).

// decodePurchase parses and validates a purchase body, returning its buyer
// id. It must never panic on any input (see FuzzDecodePurchase). Every
// refusal is sale.ErrInvalidRequest.
func decodePurchase(body []byte) (string, error) {
	buyer, err := parseBuyerObject(body)
	if err != nil {
		return "", fmt.Errorf("%w: body must be the JSON object {\"buyerId\": \"...\"}: %w", sale.ErrInvalidRequest, err)
	}
	return normalizeBuyerID(buyer)
}

// checkIdemKey accepts 1..MaxIdemKeyLen bytes of printable ASCII (RFC 9110
// field values; the key is echoed back, so nothing else is allowed in).
func checkIdemKey(k string) error {
	if len(k) > MaxIdemKeyLen {
		return fmt.Errorf("%w: %s is longer than %d bytes", sale.ErrInvalidRequest, idemKeyHeader, MaxIdemKeyLen)
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return fmt.Errorf("%w: %s must be printable ASCII", sale.ErrInvalidRequest, idemKeyHeader)
		}
	}
	return nil
}

// normalizeBuyerID returns the NFC form of a buyer id, refusing ids that
// two people could not tell apart from another: empty, only or
// surrounded by white space, or holding control, format or invisible
// characters (Unicode Cc, Cf, Cs, Co, Cn, Zl, Zp), a Default_Ignorable code
// point, a space other than U+0020, or a symbol that renders blank —
// "alice\u200b" and "alice\u034f" are not a second alice.
func normalizeBuyerID(v string) (string, error) {
	// Printable ASCII is its own NFC form and every byte of it is a visible
	// character or U+0020: only the checks on length and ends apply.
	ascii := printableASCII(v)
	if !ascii {
		v = norm.NFC.String(v)
	}
	switch {
	case v == "":
		return "", fmt.Errorf("%w: buyerId must not be empty", sale.ErrInvalidRequest)
	case len(v) > sale.MaxBuyerIDLen:
		return "", fmt.Errorf("%w: buyerId is longer than %d bytes", sale.ErrInvalidRequest, sale.MaxBuyerIDLen)
	}
	first, _ := utf8.DecodeRuneInString(v)
	last, _ := utf8.DecodeLastRuneInString(v)
	if unicode.IsSpace(first) || unicode.IsSpace(last) {
		return "", fmt.Errorf("%w: buyerId must not start or end with white space", sale.ErrInvalidRequest)
	}
	if !ascii && !visibleID(v) {
		return "", fmt.Errorf("%w: buyerId contains an invisible, control or unassigned character", sale.ErrInvalidRequest)
	}
	return v, nil
}

// visibleID says whether every character of v is visible (or U+0020).
func visibleID(v string) bool {
	for _, r := range v {
		if r == utf8.RuneError || !unicode.In(r, visible...) || blank(r) {
			return false
		}
	}
	return true
}

// printableASCII says whether v is only bytes 0x20..0x7e.
func printableASCII(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return false
		}
	}
	return true
}

// blank says whether r, of a visible category, renders as nothing or as a
// space: the Default_Ignorable code points (those not already refused as
// Cf: U+034F, the Hangul fillers, variation selectors…), every space but
// U+0020 (U+00A0, U+3000…), and U+2800 BRAILLE PATTERN BLANK, a symbol (So)
// that draws no dot.
func blank(r rune) bool {
	return unicode.In(r, unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector) ||
		(unicode.Is(unicode.Zs, r) && r != ' ') || r == '\u2800'
}

// visible are the categories a buyer id may use: letters, marks, numbers,
// punctuation, symbols and the space separators (Zs). Everything else is
// Cc, Cf, Cs, Co, Cn (unassigned), Zl or Zp.
var visible = []*unicode.RangeTable{unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Zs}

// parseBuyerObject returns the value of the only member of
// {"buyerId": "<string>"}, with JSON white space anywhere JSON allows it.
func parseBuyerObject(b []byte) (string, error) {
	var v [1]string
	if err := parseStringObjectInto(b, buyerIDName[:], v[:]); err != nil {
		return "", err
	}
	return v[0], nil
}

var buyerIDName = [1]string{"buyerId"}

// parseStringObject returns the values of an object whose members are
// exactly names (each once, in any order), every one a string.
func parseStringObject(b []byte, names ...string) ([]string, error) {
	values := make([]string, len(names))
	if err := parseStringObjectInto(b, names, values); err != nil {
		return nil, err
	}
	return values, nil
}

// parseStringObjectInto is parseStringObject writing into values (as long
// as names, at most 64): a purchase's body is decoded with no allocation
// but its buyer id's.
func parseStringObjectInto(b []byte, names, values []string) error {
	if !utf8.Valid(b) {
		return errString("not valid UTF-8")
	}
	p := parser{b: b}
	p.space()
	if !p.byte('{') {
		return errString("not a JSON object")
	}
	var seen uint64 // bit i: names[i] was read
	p.space()
	if !p.byte('}') {
		for {
			p.space()
			i, err := p.name(names)
			if err != nil {
				return err
			}
			switch {
			case i < 0:
				return errString("unknown field")
			case seen&(1<<i) != 0:
				return fmt.Errorf("duplicate field %q", names[i])
			}
			seen |= 1 << i
			p.space()
			if !p.byte(':') {
				return errString("expected ':'")
			}
			p.space()
			if values[i], err = p.str(); err != nil {
				return fmt.Errorf("%s must be a string: %v", names[i], err)
			}
			p.space()
			if p.byte(',') {
				continue
			}
			if !p.byte('}') {
				return errString("expected ',' or '}'")
			}
			break
		}
	}
	for i := range names {
		if seen&(1<<i) == 0 {
			return fmt.Errorf("%s is required", names[i])
		}
	}
	p.space()
	if p.i != len(p.b) {
		return errString("unexpected data after the JSON object")
	}
	return nil
}

// name reads a member's name and returns its index in names (-1: none of
// them). A name without escapes is compared in place, not copied.
func (p *parser) name(names []string) (int, error) {
	if p.i < len(p.b) && p.b[p.i] == '"' {
		for j := p.i + 1; j < len(p.b); j++ {
			c := p.b[j]
			if c == '"' {
				raw := p.b[p.i+1 : j]
				p.i = j + 1
				for i, n := range names {
					if string(raw) == n {
						return i, nil
					}
				}
				return -1, nil
			}
			if c == '\\' || c < 0x20 {
				break // str says what is wrong, or unescapes
			}
		}
	}
	key, err := p.str()
	if err != nil {
		return 0, err
	}
	return slices.Index(names, key), nil
}

type errString string

func (e errString) Error() string { return string(e) }

type parser struct {
	b []byte
	i int
}

func (p *parser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) byte(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// str reads a JSON string. Lone or misordered surrogate escapes are
// refused (encoding/json would turn them into U+FFFD).
func (p *parser) str() (string, error) {
	if !p.byte('"') {
		return "", errString("expected a string")
	}
	start := p.i
	// Fast path: no escapes.
	for p.i < len(p.b) {
		c := p.b[p.i]
		if c == '"' {
			s := string(p.b[start:p.i])
			p.i++
			return s, nil
		}
		if c == '\\' {
			break
		}
		if c < 0x20 {
			return "", errString("control character in a string")
		}
		p.i++
	}
	out := append([]byte(nil), p.b[start:p.i]...)
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return string(out), nil
		case c < 0x20:
			return "", errString("control character in a string")
		case c != '\\':
			out = append(out, c)
			p.i++
			continue
		}
		p.i++ // the backslash
		if p.i >= len(p.b) {
			break
		}
		e := p.b[p.i]
		p.i++
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok {
				return "", errString("bad \\u escape")
			}
			if utf16.IsSurrogate(r) {
				if !p.byte('\\') || !p.byte('u') {
					return "", errString("lone surrogate escape")
				}
				r2, ok := p.hex4()
				if r = utf16.DecodeRune(r, r2); !ok || r == utf8.RuneError {
					return "", errString("lone surrogate escape")
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			return "", errString("bad escape")
		}
	}
	return "", errString("unterminated string")
}

func (p *parser) hex4() (rune, bool) {
	if p.i+4 > len(p.b) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(p.b[p.i:p.i+4]), 16, 32)
	if err != nil {
		return 0, false
	}
	p.i += 4
	return rune(n), true
}
