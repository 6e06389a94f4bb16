// Package browser holds the dashboard tests that run in a real Chromium
// (driven with chromedp). It is a separate module so that chromedp stays out
// of the root go.mod.
package browser
