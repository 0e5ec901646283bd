package testenv

import (
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
)

// Scrape GETs a Prometheus metrics URL with header (nil: none) and returns
// every sample by series: `name{label="value",...}` with the labels in
// name order (histograms as name_count and name_sum). It fails tb unless
// the answer is 200 in the text format.
func Scrape(tb testing.TB, client *http.Client, url string, header http.Header) map[string]float64 {
	tb.Helper()
	req, err := http.NewRequestWithContext(Context(tb), http.MethodGet, url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		tb.Fatalf("scrape %s: %v", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		tb.Fatalf("scrape %s: %s: %s", url, resp.Status, b)
	}
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		tb.Fatalf("scrape %s: %v", url, err)
	}
	out := make(map[string]float64)
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			sort.Strings(labels)
			ls := ""
			if len(labels) > 0 {
				ls = "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[name+ls] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[name+ls] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[name+"_count"+ls] = float64(m.GetHistogram().GetSampleCount())
				out[name+"_sum"+ls] = m.GetHistogram().GetSampleSum()
			case m.Untyped != nil:
				out[name+ls] = m.GetUntyped().GetValue()
			}
		}
	}
	return out
}
