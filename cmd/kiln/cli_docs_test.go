package main

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDocumentedCommands checks every `kiln ...` command that README.md and
// docs/cli.md show, in code blocks and in inline code: the command and
// subcommand exist (their -h prints their own usage) and, for a command
// written out in full, its flags parse (the command line with -h appended:
// every flag before it is parsed, a wrong one exits 2). A synopsis
// (`kiln task cancel <id>...`, `[flags]`, `a|b`) is checked for its
// command words only.
func TestDocumentedCommands(t *testing.T) {
	t.Parallel()
	n := 0
	for _, file := range []string{"../../README.md", "../../docs/cli.md"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range documentedCommands(string(b)) {
			n++
			checkDocumentedCommand(t, file, line)
		}
	}
	if n < 20 {
		t.Errorf("found %d kiln commands in README.md and docs/cli.md, want at least 20: is the extraction broken?", n)
	}
}

var (
	inlineCode = regexp.MustCompile("`([^`\n]+)`")
	// kilnCommand finds a command line: kiln, bin/kiln or ./kiln, after a
	// prompt or at the start.
	kilnCommand = regexp.MustCompile(`^(?:\$ )?(?:\./|bin/)?kiln (.*)$`)
)

// documentedCommands returns the arguments of every kiln command line in a
// Markdown text: the lines of fenced blocks and the inline code spans that
// start with kiln.
func documentedCommands(md string) []string {
	var out []string
	add := func(s string) {
		if m := kilnCommand.FindStringSubmatch(strings.TrimSpace(s)); m != nil {
			out = append(out, m[1])
		}
	}
	fenced := false
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
			continue
		}
		if fenced {
			add(line)
			continue
		}
		for _, m := range inlineCode.FindAllStringSubmatch(line, -1) {
			add(strings.ReplaceAll(m[1], `\|`, "|"))
		}
	}
	return out
}

// splitShell splits a command line as a POSIX shell would for the simple
// lines of the docs: words, single and double quotes; a # word starts a
// comment and a lone & ends the line.
func splitShell(s string) []string {
	var words []string
	var w strings.Builder
	inWord, quote := false, byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
			w.WriteByte(c)
		case c == '\'' || c == '"':
			quote, inWord = c, true
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		case c == '#' && !inWord:
			return trimBackground(words)
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return trimBackground(words)
}

// trimBackground drops the & that runs a command in the background.
func trimBackground(words []string) []string {
	if len(words) > 0 && words[len(words)-1] == "&" {
		return words[:len(words)-1]
	}
	return words
}

func checkDocumentedCommand(t *testing.T, file, line string) {
	t.Helper()
	words := splitShell(line)
	if len(words) == 0 {
		t.Errorf("%s: `kiln %s`: no command", file, line)
		return
	}
	isPlaceholder := func(w string) bool { return strings.ContainsAny(w, "<>[]()|") || strings.HasSuffix(w, "...") }
	if isPlaceholder(words[0]) {
		return // `kiln <command> <sub> -h`: no command named
	}
	if words[0] == "help" {
		if len(words) > 1 && isPlaceholder(words[1]) {
			words = words[:1] // `kiln help <command>`
		}
		var stdout, stderr bytes.Buffer
		if code := run(t.Context(), words, &stdout, &stderr); code != 0 {
			t.Errorf("%s: `kiln %s`: exit %d: %s", file, line, code, &stderr)
		}
		return
	}
	// The command words: up to the first flag or placeholder.
	var path []string
	synopsis := false
	for _, w := range words {
		if strings.HasPrefix(w, "-") || isPlaceholder(w) {
			break
		}
		path = append(path, w)
	}
	for _, w := range words[len(path):] {
		synopsis = synopsis || isPlaceholder(w)
	}
	c := lookup(path[0])
	if c == nil {
		t.Errorf("%s: `kiln %s`: no command %q", file, line, path[0])
		return
	}
	// The deepest command path that prints its own usage: a subcommand
	// when the second word is one, else the command (whose words after it
	// are its arguments).
	args := words
	if synopsis {
		args = path
	}
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), append(append([]string{}, args...), "-h"), &stdout, &stderr)
	if code != 0 {
		t.Errorf("%s: `kiln %s`: with -h, exit %d: %s", file, line, code, &stderr)
		return
	}
	usage, _, _ := strings.Cut(stdout.String(), "\n")
	want := "Usage: kiln " + c.name
	if len(path) > 1 && strings.HasPrefix(usage, "Usage: kiln "+path[0]+" "+path[1]) {
		want = "Usage: kiln " + path[0] + " " + path[1]
	}
	if !strings.HasPrefix(usage, want) {
		t.Errorf("%s: `kiln %s`: -h printed %q, want %q", file, line, usage, want)
	}
}
