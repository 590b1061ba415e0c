package loadtest

import (
	"image/color"
	"io"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Chart size: 10 × 6.25 inches at 96 dpi.
const (
	ChartWidthPx  = 960
	ChartHeightPx = 600
	chartDPI      = 96
)

var (
	colPay     = color.RGBA{R: 31, G: 119, B: 180, A: 255}
	colEvents  = color.RGBA{R: 255, G: 127, B: 14, A: 255}
	colReceipt = color.RGBA{R: 44, G: 160, B: 44, A: 255}
	colErrors  = color.RGBA{R: 214, G: 39, B: 40, A: 255}
)

func newCanvas() *vgimg.Canvas {
	return vgimg.NewWith(
		vgimg.UseWH(vg.Length(ChartWidthPx)*vg.Inch/chartDPI, vg.Length(ChartHeightPx)*vg.Inch/chartDPI),
		vgimg.UseDPI(chartDPI), vgimg.UseBackgroundColor(color.White))
}

func line(p *plot.Plot, name string, c color.Color, xy plotter.XYs) error {
	l, err := plotter.NewLine(xy)
	if err != nil {
		return err
	}
	l.Color = c
	l.Width = vg.Points(1.5)
	p.Add(l)
	p.Legend.Add(name, l)
	return nil
}

// ThroughputChart draws payments and events per second over the run as a
// PNG: payments on top, events below, since events run at up to a hundred
// times the payment rate and would flatten payments on a shared axis.
func (r *Results) ThroughputChart(w io.Writer) error {
	pays, errs, evs, recs := make(plotter.XYs, len(r.Timeline)), make(plotter.XYs, len(r.Timeline)),
		make(plotter.XYs, len(r.Timeline)), make(plotter.XYs, len(r.Timeline))
	for i, s := range r.Timeline {
		x := float64(s.T)
		pays[i] = plotter.XY{X: x, Y: float64(s.Payments)}
		errs[i] = plotter.XY{X: x, Y: float64(s.Errors)}
		evs[i] = plotter.XY{X: x, Y: float64(s.Events)}
		recs[i] = plotter.XY{X: x, Y: float64(s.Receipted)}
	}
	top := plot.New()
	top.Title.Text = "Channel payments per second"
	top.Y.Label.Text = "per second"
	top.Y.Min = 0
	top.Legend.Top = true
	bottom := plot.New()
	bottom.Title.Text = "Usage events per second"
	bottom.X.Label.Text = "seconds into the run"
	bottom.Y.Label.Text = "per second"
	bottom.Y.Min = 0
	bottom.Legend.Top = true
	if len(r.Timeline) > 0 {
		if err := line(top, "payments", colPay, pays); err != nil {
			return err
		}
		if err := line(top, "errors", colErrors, errs); err != nil {
			return err
		}
		if err := line(bottom, "published", colEvents, evs); err != nil {
			return err
		}
		if err := line(bottom, "receipted", colReceipt, recs); err != nil {
			return err
		}
	}
	img := newCanvas()
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadTop: vg.Points(6), PadBottom: vg.Points(6),
		PadLeft: vg.Points(6), PadRight: vg.Points(12), PadY: vg.Points(12)}
	plots := [][]*plot.Plot{{top}, {bottom}}
	cs := plot.Align(plots, tiles, dc)
	top.Draw(cs[0][0])
	bottom.Draw(cs[1][0])
	_, err := vgimg.PngCanvas{Canvas: img}.WriteTo(w)
	return err
}

// cdf turns a histogram into cumulative-share points at the buckets'
// upper bounds, in milliseconds; nil when it holds no samples.
func cdf(h []Bucket) plotter.XYs {
	total := 0
	for _, b := range h {
		total += b.Count
	}
	if total == 0 {
		return nil
	}
	var xy plotter.XYs
	acc := 0
	for _, b := range h {
		if acc == 0 && b.Count == 0 {
			continue // start the curve at the fastest sample
		}
		acc += b.Count
		xy = append(xy, plotter.XY{X: float64(b.UpperUS) / 1000, Y: float64(acc) / float64(total)})
		if acc == total {
			break
		}
	}
	return xy
}

// LatencyChart draws the latency distributions (cumulative share of
// operations completed within x ms, x on a log axis) as a PNG.
func (r *Results) LatencyChart(w io.Writer) error {
	p := plot.New()
	p.Title.Text = "Latency distribution (CDF)"
	p.X.Label.Text = "latency, ms (log scale)"
	p.Y.Label.Text = "share of operations at or below"
	p.Y.Min, p.Y.Max = 0, 1
	p.Legend.Top = true
	p.Legend.Left = true
	any := false
	for _, s := range []struct {
		name string
		c    color.Color
		h    []Bucket
	}{
		{"payment", colPay, r.Payments.Histogram},
		{"usage batch publish", colEvents, r.Events.PubHist},
		{"receipt", colReceipt, r.Events.ReceiptHist},
	} {
		xy := cdf(s.h)
		if xy == nil {
			continue
		}
		any = true
		if err := line(p, s.name, s.c, xy); err != nil {
			return err
		}
	}
	if any {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	} else {
		p.Title.Text += ": no samples"
	}
	img := newCanvas()
	p.Draw(draw.New(img))
	_, err := vgimg.PngCanvas{Canvas: img}.WriteTo(w)
	return err
}
