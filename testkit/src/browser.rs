//! A real headless Chromium driven through chromedriver (WebDriver), for the
//! dashboard tests.
